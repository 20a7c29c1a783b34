"""One compile of a function across processes: a lock file beside its disk cache.

Used by ``native`` (units and cached dispatchers compile holding it) and ``drivers.prewarm``
(its child passes over a function another process holds). Standard library only."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

#: How long a process waits for another's compile before compiling the function itself (s).
LOCK_WAIT = 120.0

#: The lock files this process holds (:func:`compile_lock`; a compile that reaches its own
#: function again, as a recursive one does, takes none the second time).
_HELD: set[str] = set()


def lock_path(folder: str | os.PathLike, name: str) -> str:
    """The lock file of function ``name`` (``module.qualname``) in the disk cache ``folder``."""
    return os.path.join(folder, f"{name}.lock")


@contextlib.contextmanager
def compile_lock(folder: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold ``name``'s lock file in the disk cache's ``folder`` while it compiles or loads.

    A unit, or a cached function of the lab, the tools or ``net``. Two processes on one empty
    cache (a user's pool of workers, the test suite's, the prewarm child) each compiled what
    both needed at once; the second now waits for the first's compile and loads it from the
    cache. Taken inside Numba's compiler lock (so no two threads of this process meet on it),
    in the order of the calls between the functions (a caller's before its callee's, so two
    processes cannot wait for each other), the wait bounded by :data:`LOCK_WAIT`; none where
    the folder cannot hold one, or off POSIX."""
    path = lock_path(folder, name)
    try:
        import fcntl
        if path in _HELD:
            raise OSError
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except (ImportError, OSError):
        yield
        return
    _HELD.add(path)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        yield
    finally:
        _HELD.discard(path)
        os.close(fd)                                # (which releases the lock)


def held_elsewhere(folder: str | os.PathLike, name: str) -> bool:
    """Whether another process holds ``name``'s lock file in ``folder`` now (it compiles it)."""
    try:
        import fcntl
        fd = os.open(lock_path(folder, name), os.O_CREAT | os.O_RDWR, 0o644)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
