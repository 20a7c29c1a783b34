"""``numslab.jit``: the API for users' own ``@njit`` code.

Implemented in ``numslab.drivers.jitapi``; see its documentation."""
from .drivers.jitapi import *  # noqa: F401,F403
from .drivers.jitapi import __all__  # noqa: F401
