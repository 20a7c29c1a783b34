"""A Ctrl-C that meets compiled code's call back into Python, raised once that code returns.

Compiled engine code calls Python back in the middle of an operation (a unit's first call
compiles it in its stub, :meth:`native.Unit._first_call`; a waiting thread sleeps in
``gilguard.wait_for_engine``). Those are ctypes callbacks, which cannot raise (a
KeyboardInterrupt raised there is printed and dropped), and the operation cannot stop half-way.
While a stub compiles on the main thread, :func:`_sigint_in_engine` stands in for the program's
SIGINT handler: a Ctrl-C is noted and said, the compile and the operation go on, and a thread
(:func:`_redeliver`) signals again until the main thread runs Python outside every callback,
where the program's handler gets it (``KeyboardInterrupt`` once the operation has returned).
What the program's handler raised in a callback before ours stood in (a Ctrl-C that came while
compiled code ran, handled on a stub's first line) reaches ``sys.unraisablehook``
(:func:`_unraisable`), which defers it the same way and raises that exception itself.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import CodeType, FrameType
from typing import Any

#: The code of the Python functions compiled code calls back (a frame of one of them on the
#: stack: inside an engine operation).
CALLBACKS: set[CodeType] = set()
#: Seconds :func:`_redeliver` waits at most for the main thread to leave a stub before it
#: signals again (a wait in ``gilguard.wait_for_engine`` does not say when it ends).
RETRY = 0.05


class _Deferred:
    """The program's SIGINT handler while ours stands in (None: not), and a Ctrl-C waiting."""

    program: Any = None
    pending = False
    raised: BaseException | None = None     #: what the program's handler raised in a callback
    left = threading.Event()            #: set when a stub ends with a Ctrl-C pending
    depth = 0                           #: stubs compiling on the main thread


def defer_sigint() -> bool:
    """Stand in for the program's SIGINT handler (on the main thread, if it is a Python one).

    True if ours stands in now (it may have already)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = signal.getsignal(signal.SIGINT)
    if handler is not _sigint_in_engine:
        if not callable(handler):       # SIG_IGN, SIG_DFL: nothing of Python's to defer
            return False
        _Deferred.program = handler
        signal.signal(signal.SIGINT, _sigint_in_engine)
    _Deferred.depth += 1
    return True


def end_defer() -> None:
    """After :func:`defer_sigint`: the program's handler back, unless a Ctrl-C is pending."""
    _Deferred.depth -= 1
    if _Deferred.depth:
        return
    if _Deferred.pending:
        _Deferred.left.set()
    elif _Deferred.program is not None:
        signal.signal(signal.SIGINT, _Deferred.program)
        _Deferred.program = None


def note_interrupt(where: str, what: str = "KeyboardInterrupt") -> None:
    """Note a Ctrl-C met inside an engine operation at ``where``, to raise when it returns."""
    if _Deferred.pending:
        return
    _Deferred.pending = True
    sys.stderr.write(f"numslab: {what} deferred: {where} in the middle of an "
                     f"engine operation; raised once the operation returns\n")
    sys.stderr.flush()
    threading.Thread(target=_redeliver, name="numslab-sigint", daemon=True).start()


def from_signal_handler(exc: BaseException) -> bool:
    """True if ``exc`` was raised in a Python signal handler of the program's (its traceback)."""
    codes = set()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        code = getattr(getattr(handler, "__func__", handler), "__code__", None)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


def defer_raised(exc: BaseException, where: str) -> None:
    """After :func:`defer_sigint`: what a signal's handler raised at ``where``, raised later.

    As a Ctrl-C is (:func:`note_interrupt`), once the operation returns."""
    if not _Deferred.pending:
        _Deferred.raised = exc
    note_interrupt(where, type(exc).__name__)


def _inside_callback(frame: FrameType | None) -> str | None:
    """The unit (or wait) whose callback ``frame`` runs in, or None outside every callback."""
    while frame is not None:
        if frame.f_code in CALLBACKS:
            return _callback_name(frame.f_code, frame.f_locals.get("self"))
        frame = frame.f_back
    return None


def _callback_name(code: CodeType, unit: Any) -> str:
    """What the callback of ``code`` (a stub if ``unit`` is its unit) was doing, for the note."""
    name = getattr(unit, "name", None)
    return f"compiling {name}" if name else f"{code.co_name} waiting for another thread"


def _unraisable(u: Any) -> None:
    """``sys.unraisablehook``: what the program's handler raised in a callback is deferred.

    A Ctrl-C that came while compiled code ran is handled as the main thread next runs Python:
    when that is a stub's first line (or ``wait_for_engine``'s sleep) the program's handler
    raised it there, outside :func:`defer_sigint`'s reach, and ctypes printed "Exception ignored"
    and dropped it. It is now noted and raised once the operation returns, as one during the
    compile is: that exception itself, the program's handler not called again (a handler of its
    own that raised another exception saw it dropped, one that counted Ctrl-Cs counted it twice).
    Only a signal's handler raises there (a stub's compile fails by exiting). Anything else goes
    to the hook this one replaced."""
    func = getattr(u.object, "__func__", u.object)
    if isinstance(u.exc_value, BaseException) and \
            getattr(func, "__code__", None) in CALLBACKS and \
            threading.current_thread() is threading.main_thread() and defer_sigint():
        defer_raised(u.exc_value,
                     _callback_name(func.__code__, getattr(u.object, "__self__", None)))
        end_defer()                         # (the stub's second call compiles and runs it)
        return
    _previous_hook(u)


_previous_hook = sys.unraisablehook
sys.unraisablehook = _unraisable


def _sigint_in_engine(signum: int, frame: FrameType | None) -> Any:
    """SIGINT's handler while a stub compiles, or a Ctrl-C waits for its operation's end.

    Inside a callback: noted (:func:`note_interrupt`). Outside: the program's handler back, and
    called (``default_int_handler`` raises ``KeyboardInterrupt``)."""
    where = _inside_callback(frame)
    if where is not None:
        note_interrupt(where)
        return None
    program = _Deferred.program or signal.default_int_handler
    raised = _Deferred.raised
    _Deferred.pending, _Deferred.program, _Deferred.raised = False, None, None
    signal.signal(signal.SIGINT, program)
    if raised is not None:                  # (the program's handler ran for it already)
        raise raised
    return program(signum, frame)


def _redeliver() -> None:
    """Signal the main thread as each stub ends until :func:`_sigint_in_engine` delivers.

    Each signal is handled where the main thread next runs Python: in a callback it waits on,
    outside one it is raised. (The signal is made once this thread holds the GIL, which compiled
    code running an operation does not let go: at the main thread's next Python, the next stub or
    the return from the operation.)"""
    while _Deferred.pending:
        _Deferred.left.wait(RETRY)
        _Deferred.left.clear()
        if signal.getsignal(signal.SIGINT) is not _sigint_in_engine:
            _Deferred.pending, _Deferred.raised = False, None   # (the program set its own)
            return
        if _Deferred.depth:                     # (a stub compiling: it says when it ends)
            continue
        # (a real signal, to the main thread: it also cuts a sleep or other wait short, where
        # _thread.interrupt_main would wait for it to end)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
