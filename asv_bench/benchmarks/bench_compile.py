"""Compile time (issue 11), measured in fresh interpreters (asv ``timeraw``).

Only the statement is timed, not the interpreter's start or the set-up. The code is
``coldstart.COLD_CASES`` and ``coldstart.user_compile_code``, which ``numslab bench --compile``
runs too.

Cold: the set-up points ``NUMBA_CACHE_DIR`` at a fresh empty temporary directory (removed
at exit) before anything imports Numba, so nothing comes from a cache:

* ``timeraw_cold_first_kmalloc`` — ``import numslab; a = numslab.kmalloc(64);
  numslab.kfree(a)`` (target: at most 10 s);
* ``timeraw_cold_public_api`` — ``coldstart.exercise_public_api()``: every facade method and
  every ``numslab.jit`` function (target: at most 60 s);
* ``timeraw_cold_main_job`` — the README's main job, ``python examples/packet_pipeline.py``
  on 2000 packets, as a subprocess (target: its summary within 60 s);
* ``timeraw_cold_numba_floor`` — the reference: import Numba and compile one trivial
  function (what any Numba package pays cold).

Warm: ``timeraw_user_compile`` compiles a user's small simulation (single objects, bulk,
kmalloc; ``coldstart.user_sim``) written on ``numslab.jit`` against the same simulation on
free-index stacks, in an interpreter where numslab's own kernels come from a warm cache (the
set-up runs every simulation once in another interpreter sharing the cache) while the user's
function is compiled with ``cache=False``. Target: numslab at most 1.5x the stack's.
"""
from numslab.tools import coldstart


def _cold(case):
    """A cold timeraw benchmark of ``coldstart.COLD_CASES[case]``.

    One run per fresh interpreter, each with its own empty cache, no warm-up runs."""
    def func():
        return coldstart.cold_case_code(case)
    func.__name__ = func.__qualname__ = "timeraw_cold_" + case.replace("-", "_")
    func.__doc__ = f"Cold case {case!r} of coldstart.COLD_CASES, no Numba cache anywhere."
    func.timeout = 900
    func.repeat = (1, 3, 300.0)
    func.rounds = 1
    func.warmup_time = 0
    func.number = 1
    return func


timeraw_cold_numba_floor = _cold("numba-floor")
timeraw_cold_first_kmalloc = _cold("first-kmalloc")
timeraw_cold_public_api = _cold("public-api")
timeraw_cold_main_job = _cold("main-job")


def timeraw_user_compile(variant, impl):
    """Compile (not run) the user's simulation ``variant`` written on ``impl``."""
    return coldstart.user_compile_code(variant, impl)


def _warm_numslab(variant, impl):
    coldstart.warm_user_sims()


timeraw_user_compile.params = (list(coldstart.USER_SIM_VARIANTS), list(coldstart.USER_SIM_IMPLS))
timeraw_user_compile.param_names = ["variant", "impl"]
timeraw_user_compile.setup = _warm_numslab
timeraw_user_compile.timeout = 600
timeraw_user_compile.warmup_time = 0
