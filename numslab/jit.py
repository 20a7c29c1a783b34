"""``numslab.jit``: the API for users' own ``@njit`` code.

Implemented in ``numslab.drivers.jitapi``, whose documentation (usage, errors, threads and
handles) is this module's."""
from .drivers.jitapi import *  # noqa: F401,F403
from .drivers.jitapi import __all__  # noqa: F401

from .drivers import jitapi as _jitapi

__doc__ = __doc__ + "\n\n" + (_jitapi.__doc__ or "")
del _jitapi
