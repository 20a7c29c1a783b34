"""``numslab.jit``: the API for users' own ``@njit`` code.

Implemented in ``numslab.drivers.jitapi``, whose documentation (usage, errors, threads and
handles) is this module's."""
import inspect as _inspect

from .drivers.jitapi import *  # noqa: F401,F403
from .drivers.jitapi import __all__  # noqa: F401

from .drivers import jitapi as _jitapi
from .flags import GFP_KERNEL as _GFP_KERNEL

# help(numslab.jit) opens with the usage; where it is implemented comes last
__doc__ = (_jitapi.__doc__ or "") + "\n\n" + __doc__.split("\n\n", 1)[1]


class _Shown:
    """A default as ``help`` shows it: by its name (``gfp=GFP_KERNEL``), not as ``3264``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _shown_signature(f):
    """The signature ``help`` shows for ``f``: gfp's default named, keyword-only arguments so.

    Only ``help`` and ``inspect`` read it (Numba binds arguments by the Python function's own
    signature), so it changes no call."""
    sig = _inspect.signature(f.py_func)
    keywords = set(getattr(f, "numslab_keywords", ()))
    params, named = [], False
    for p in sig.parameters.values():
        named = named or p.name in keywords
        if named:
            p = p.replace(kind=_inspect.Parameter.KEYWORD_ONLY)
        if p.name == "gfp" and p.default == _GFP_KERNEL:
            p = p.replace(default=_Shown("GFP_KERNEL"))
        params.append(p)
    return sig.replace(parameters=params)


for _name in __all__:
    _f = getattr(_jitapi, _name)
    if hasattr(_f, "py_func"):
        _f.__signature__ = _shown_signature(_f)
del _jitapi, _name, _f
