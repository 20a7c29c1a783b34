"""Numba 0.68.1 on Python >= 3.11, no numslab: a ``return`` in a loop in a ``try`` body.

Each turn of the loop that does not return leaves the try (``end_try_block``) without entering
it again, so Numba's count of open trys (``try_state``) drifts down: at 0 an error inside the
try escapes its ``except``, at any other value an error after the try is lost. Prints
``[1, 'ValueError', 1, 1]`` (should be all 1) and ``['ValueError', 0, 0, 0]`` (should be all
'ValueError'). Workaround (README, "From your own @njit code"): no ``return`` in a loop in a
``try``: ``break`` and return after the try, or move the loop into a function of its own."""
import numpy as np
from numba import njit


@njit
def boom(x):
    if x > 0:
        raise ValueError("boom")
    return 0


@njit
def inside(arr, n):
    try:
        for j in range(n):
            if arr[j] == 99:
                return -1
        boom(1)                 # escapes the except after 1 turn of the loop
    except Exception:
        return 1
    return 0


@njit
def after(arr, n):
    try:
        for j in range(n):
            if arr[j] == 99:
                return -1
    except Exception:
        return 1
    boom(1)                     # lost (returns 0) after 1 or more turns
    return 0


def outcome(f, n):
    try:
        return f(np.zeros(4, np.int64), n)
    except ValueError:
        return "ValueError"


print([outcome(inside, n) for n in range(4)])
print([outcome(after, n) for n in range(4)])
