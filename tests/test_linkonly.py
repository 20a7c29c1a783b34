"""``numslab.engine.linkonly``: engine helpers compiled to IR that units link in, with no machine
code, no wrappers and no cache entry of their own, and never callable from Python."""
import numba
import pytest
from numba import types
from numba.core.compiler_lock import global_compiler_lock
from test_native import run_python

from numslab.engine import layout, linkonly, native, pages, slablists


def test_engine_helpers_are_link_only_and_uncached():
    assert isinstance(layout._ca, native.HelperDispatcher)
    assert isinstance(slablists._get_fp, native.HelperDispatcher)
    assert not isinstance(layout._ca._cache, native.EngineCache)
    # units and numslab.jit functions are not helpers
    assert not isinstance(pages.alloc_pages, numba.core.dispatcher.Dispatcher)
    from numslab.drivers import jitapi
    assert type(jitapi.kmem_cache_alloc) is native.EngineDispatcher
    assert isinstance(jitapi.kmem_cache_alloc._cache, native.EngineCache)


def test_a_helper_called_from_python_raises_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"numslab\.engine\.layout\._ca is an engine helper"):
        layout._ca(1, 2)


def test_a_helper_has_no_machine_code_and_its_entry_point_raises():
    """Compiled for a unit (here on its own), a helper's library is optimised IR only: it was
    never added to the JIT, and the entry point Numba keeps for it runs no compiled code."""
    layout._rand.compile((native.State,))
    (cres,) = layout._rand.overloads.values()
    assert isinstance(cres.library, linkonly.LinkOnlyLibrary)
    assert "define" in cres.library.get_llvm_str()             # the IR units link in
    with pytest.raises(RuntimeError, match="no machine code"):
        cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    with pytest.raises(TypeError, match="not callable"):
        cres.entry_point(0)
    # no wrapper for Python or C was made
    assert cres.fndesc.llvm_cpython_wrapper_name not in cres.library.get_llvm_str()


#: Two units on a fresh process: the page allocator's and the partial list's (which reads the
#: cache table, ``_ca``, and counts, ``_stat``). (A first ``kmalloc``, the boot's fifteen units,
#: took 18 s of the suite's CPU for the same two answers.)
HELPERS_ON_START = r"""
import gc, json, os
import numslab
from numslab.engine import native, pages, slablists
pages.alloc_pages.compile()
slablists.get_partial.compile()
helpers = [o for o in gc.get_objects() if isinstance(o, native.HelperDispatcher)]
cached = [f for _, _, fs in os.walk(os.environ["NUMBA_CACHE_DIR"]) for f in fs
          if f.endswith(".nbi")]
print(json.dumps({"compiled": sorted(h.py_func.__qualname__ for h in helpers if h.overloads),
                  "cached": cached}))
"""


def test_helpers_compile_with_their_first_unit_and_never_on_a_warm_start(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    cold = run_python(HELPERS_ON_START, env)
    assert "_ca" in cold["compiled"] and "_stat" in cold["compiled"]
    # the cache holds units (and other entry points), never a helper
    helper_names = {f"{m}.{n}" for m, n in (h.split(".", 1) for h in (
        "layout._ca", "layout._stat", "slablists._get_fp"))}
    assert any(f.startswith("pages.alloc_pages-") for f in cold["cached"]), cold["cached"]
    assert not [f for f in cold["cached"] if f.split("-")[0] in helper_names]
    warm = run_python(HELPERS_ON_START, env)
    assert warm["compiled"] == []                   # every unit came from the cache


def test_a_link_only_helper_keeps_numba_typing_errors():
    @native.jit(cache=False)
    def bad(x):
        return x.no_such_attribute

    # defined outside the engine package: an ordinary engine function, not a helper
    assert type(bad) is native.EngineDispatcher
    helper = native.HelperDispatcher(lambda x: x.no_such_attribute,
                                     targetoptions=dict(native.OPTIONS))
    with pytest.raises(numba.core.errors.TypingError):
        helper.compile((types.int64,))


@native.jit(helper=True, cache=False)
def _lo_inner(x):
    return x * 3 + 1


@native.jit(helper=True, cache=False)
def _lo_outer(x):
    return _lo_inner(x) + _lo_inner(x + 1)


@native.jit(helper=True, cache=False, inline=True)
def _lo_outer_inline(x):
    return _lo_inner(x) + _lo_inner(x + 1)


def test_only_an_inline_helper_is_optimised_alone():
    """A helper not marked ``inline=True`` keeps its calls: it is optimised with its unit only.

    Optimised alone too, LLVM's module pipeline ran twice on every such helper."""
    sig = (types.int64,)
    _lo_outer.compile(sig)
    _lo_outer_inline.compile(sig)
    (inner,) = _lo_inner.overloads.values()
    name = inner.fndesc.llvm_func_name

    def calls_inner(helper) -> bool:
        (cres,) = helper.overloads.values()
        assert isinstance(cres.library, linkonly.LinkOnlyLibrary)
        with global_compiler_lock:              # (as when a unit first links it)
            cres.library._ensure_finalized()
        return any(line.lstrip().startswith(("%", "call")) and "call" in line and name in line
                   for line in cres.library.get_llvm_str().splitlines())

    assert calls_inner(_lo_outer)               # function passes only: the calls stay
    assert not calls_inner(_lo_outer_inline)    # optimised alone: inlined
