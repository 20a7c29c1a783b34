"""Argument checks shared by the facade's modules: every value a user passes is checked here
(type and range) before it reaches a unit, so that bad input raises a numslab error."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError


def check_gfp(gfp: Any, fn: str) -> int:
    """``gfp`` if it is a set of GFP flags: an int (not a bool) in 0..2**32-1."""
    if type(gfp) is int and 0 <= gfp < 1 << 32:
        return gfp
    if isinstance(gfp, np.integer) and not isinstance(gfp, np.bool_) and 0 <= gfp < 1 << 32:
        return int(gfp)
    raise InvalidArgumentError(f"{fn}: gfp {gfp!r} is not a set of GFP flags (an int in "
                               "0..2**32-1)")
