"""``numslab.jit``: the API for users' own ``@njit`` code.

Implemented in ``numslab.drivers.jitapi``, whose documentation (usage, errors, threads and
handles) is this module's."""
from .drivers.jitapi import *  # noqa: F401,F403
from .drivers.jitapi import __all__  # noqa: F401

from .drivers import jitapi as _jitapi

# help(numslab.jit) opens with the usage; where it is implemented comes last
__doc__ = (_jitapi.__doc__ or "") + "\n\n" + __doc__.split("\n\n", 1)[1]
del _jitapi
