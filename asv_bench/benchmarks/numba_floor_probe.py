"""A trivial cached @njit function: what Numba alone costs a fresh interpreter.

Its caller: ``bench_memory.timeraw_numba_floor``."""
import numba


@numba.njit(cache=True)
def first(a):
    """Return the first element of ``a``."""
    return a[0]
