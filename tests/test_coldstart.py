"""``numslab.tools.coldstart``: the whole public API in one go, users' simulations on numslab
and on free-index stacks, the fresh-interpreter timings and the LLVM IR checks (what they
compute and that they run; never how fast: that is asv's)."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import numslab
from numslab.tools import bench, coldstart


def is_finite_positive(x) -> bool:
    return bool(np.isfinite(x)) and x > 0


def _stack_helpers_in_a_loop(stack, top, bulk, rounds, out):
    """What the jitted-stack peer used to be: the helpers called from the loop."""
    for _ in range(rounds):
        for i in range(bulk):
            out[i] = bench.jit_stack_alloc(stack, top)
        for i in range(bulk):
            bench.jit_stack_free(stack, top, out[i])


TOY_IR = """
define i64 @outer(i64 %n) {
entry:
  br label %loop
loop:                                             ; preds = %loop, %entry
  %i = phi i64 [ 0, %entry ], [ %j, %loop ]
  call void @NRT_incref(ptr null)
  %r = call i64 @helper(i64 %i)
  %f = inttoptr i64 %n to ptr
  %g = call i64 %f(i64 %i)
  %j = add i64 %i, 1
  %c = icmp slt i64 %j, %n
  br i1 %c, label %loop, label %"exit.0"
"exit.0":                                         ; preds = %loop
  call void @NRT_decref(ptr null)
  ret i64 %j
}

define linkonce_odr i64 @helper(i64 %x) {
  call void @NRT_MemInfo_call_dtor(ptr null)
  ret i64 %x
}
"""


def test_refcount_check_sees_arrays_passed_to_calls():
    """The checker's positive control: a loop passing arrays to @njit helpers increfs and
    decrefs them on every call."""
    st_ = bench.JitStack(8)
    calls = coldstart.refcount_calls_in_loops(_stack_helpers_in_a_loop, st_.stack, st_.top, 2, 1,
                                          np.zeros(2, np.int64))
    assert "NRT_incref" in calls and "NRT_decref" in calls


def test_ir_parsing_on_a_toy_module():
    funcs = coldstart.ir_functions(TOY_IR)
    assert list(funcs) == ["outer", "helper"]
    assert [label for label, _ in funcs["outer"]] == ["<entry>", "entry", "loop", "exit.0"]
    assert coldstart.loop_blocks(funcs["outer"]) == {"loop"}
    assert coldstart.loop_blocks(funcs["helper"]) == set()
    # the loop's own calls, then those of the module's functions it calls; not the exit's
    assert coldstart.loop_calls(TOY_IR, "outer") == ["NRT_incref", "helper", "<indirect>",
                                                 "NRT_MemInfo_call_dtor"]


def test_engine_symbol_and_units_defined():
    sym = "_ZN7numslab6engine8cpucache15slab_alloc_slowB2v1B38xxE5State"
    assert coldstart.engine_symbol(sym) == ("cpucache", "slab_alloc_slow")
    assert coldstart.engine_symbol("_ZN7numslab7drivers6jitapi16kmem_cache_allocE") is None
    ir = f"define i64 @{sym}(ptr %st) {{\n  ret i64 0\n}}\n" \
         "define i64 @_ZN7numslab6engine6layout3_caB2v1E(i64 %a) {\n  ret i64 0\n}\n"
    assert coldstart.units_defined(ir) == [sym]          # _ca is a helper, not a unit


def test_exercise_public_api_leaves_nothing_behind():
    sa = coldstart.exercise_public_api()
    assert sa.caches == sa.kmalloc_caches              # every other cache destroyed
    assert all(c.live_objects == c.sheaf_objects + c.barn_objects + c.random_seq_objects
               for c in sa.caches)              # (sheaves and barns: 7.x)
    sa.validate()
    d = numslab.default_allocator()
    assert "api_module_level" not in [c.name for c in d.caches]
    d.validate()


@pytest.mark.parametrize("variant", coldstart.USER_SIM_VARIANTS)
def test_user_sims_agree_and_numslab_leaks_nothing(variant):
    """A simulation gives the same result on numslab and on stacks (it sums the words it
    wrote), frees everything, and its numslab version's code holds none of the engine's
    slow paths (units), reaching them through the unit table; neither loops on refcounts."""
    fn_s, args_s = coldstart.user_sim(variant, "numslab")
    fn_k, args_k = coldstart.user_sim(variant, "stack")
    args_s, args_k = args_s[:-1] + (5,), args_k[:-1] + (5,)
    got_s = numba.njit(cache=False)(fn_s)(*args_s)
    got_k = numba.njit(cache=False)(fn_k)(*args_k)
    assert got_s == got_k != 0
    sa = args_s[0]._owner
    assert all(c.live_objects == c.sheaf_objects + c.barn_objects + c.random_seq_objects
               for c in sa.caches)              # (sheaves and barns: 7.x)
    sa.validate()
    ir, name = coldstart.fresh_llvm(fn_s, *args_s)
    assert coldstart.units_defined(ir) == []
    for slow in ("slab_alloc_slow", "alloc_bulk_slab", "free_bulk_raw", "replace_empty_main"):
        assert not [f for f in coldstart.ir_functions(ir) if slow in f], slow
    assert "numslab_units" in ir
    assert not [c for c in coldstart.loop_calls(ir, name) if c.startswith("NRT_")]
    ir, name = coldstart.fresh_llvm(fn_k, *args_k)
    assert not [c for c in coldstart.loop_calls(ir, name) if c.startswith("NRT_")]


def test_fresh_cache_setup_gives_an_empty_cache_of_its_own():
    stmt = ("assert os.listdir(os.environ['NUMBA_CACHE_DIR']) == []\n"
            "assert os.path.basename(_cache).startswith('numslab-cold-')\n")
    t = coldstart.time_in_fresh_interpreter(stmt, coldstart.FRESH_CACHE_SETUP + "import os\n")
    assert is_finite_positive(t)


def test_time_in_fresh_interpreter_reports_a_failure():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        coldstart.time_in_fresh_interpreter("1 / 0")


def test_cold_cases_set_the_cache_before_numba_is_imported():
    assert set(coldstart.COLD_LIMITS) < set(coldstart.COLD_CASES)
    assert coldstart.MAIN_JOB.name == "packet_pipeline.py" and coldstart.MAIN_JOB.exists()
    for case in coldstart.COLD_CASES:
        stmt, setup = coldstart.cold_case_code(case)
        assert setup.startswith(coldstart.FRESH_CACHE_SETUP)
        assert "numba" not in setup.replace('"numba" not in sys.modules', "")
        compile(stmt, case, "exec")
        compile(setup, case, "exec")


def test_user_compile_code_runs_in_a_fresh_interpreter():
    stmt, setup = coldstart.user_compile_code("bulk", "stack")
    assert "cache=False" in setup and stmt.strip() == "f.compile(sig)"
    assert is_finite_positive(coldstart.time_in_fresh_interpreter(stmt, setup))
