"""Process-wide concerns, in one place: the runs of this process that are still open, SIGTERM,
``sys.exit``, interpreter exit and fork."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from . import _spool
from ._status import RunStatus, status_for
from ._warn import logger

__all__ = [
    "SIGTERM_FINISH_S",
    "OpenRun",
    "active_runs",
    "at_fork_in_child",
    "register",
    "unregister",
]


class OpenRun(Protocol):
    """What the process needs of an open run (a `Run`)."""

    uuid: uuid_module.UUID

    @property
    def finish_timeout(self) -> float: ...

    def finish(self, status: RunStatus = ..., *, timeout: float | None = None) -> None: ...

    def forget_after_fork(self) -> None: ...


_active: dict[int, OpenRun] = {}
_active_lock = threading.RLock()
_previous_sigterm: Any = None
_sigterm_installed = False
_in_sigterm = False
#: SIGTERM gives a process a grace period (Slurm's and Kubernetes' default is 30 s): the runs
#: of this process together wait at most this long for their database, then spool.
SIGTERM_FINISH_S = 5.0
_exit_code: list[Any] = []  # the code sys.exit() was last called with
_fork_callbacks: list[Callable[[], None]] = []


def register(run: OpenRun) -> None:
    """Count `run` as open: it is finished at exit and on SIGTERM unless it ends first."""
    global _previous_sigterm, _sigterm_installed
    with _active_lock:
        _active[id(run)] = run
        _watch_sys_exit()
        if _sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is _on_sigterm:
            # Still ours (a fork, or a run that ended while a later handler sat on top of
            # ours): the handler before ours is the one recorded then. Recording ourselves as
            # "previous" would make SIGTERM call us again and again.
            _sigterm_installed = True
            return
        if previous is signal.SIG_IGN or previous is None:
            return  # ignored, or set outside Python: leave it alone
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            return
        _previous_sigterm, _sigterm_installed = previous, True


def active_runs() -> list[OpenRun]:
    """The runs of this process that have not finished."""
    with _active_lock:
        return list(_active.values())


def unregister(run: OpenRun) -> None:
    """`run` ended: no longer finished at exit; the last one gives SIGTERM back."""
    global _sigterm_installed
    with _active_lock:
        _active.pop(id(run), None)
        if _active or not _sigterm_installed:
            return
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, _previous_sigterm)
            _sigterm_installed = False


def _finish_all(status: RunStatus, seconds: float) -> None:
    """Finish every active run as `status`, all of them within `seconds` together."""
    deadline = time.monotonic() + seconds
    for run in active_runs():
        try:
            run.finish(status, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            logger.exception("sqltrack: could not finish run %s", run.uuid)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _in_sigterm
    if _in_sigterm:
        return  # a handler we passed the signal on to calls us back: we are ending already
    _in_sigterm = True
    try:
        previous = _previous_sigterm
        if previous is _on_sigterm or previous is None:
            previous = signal.SIG_DFL
        # A handler installed after ours that calls it (Lightning's does) owns the process's
        # fate: it stops training gracefully, so do not kill the process under it. (Asked
        # before the runs finish: the last one to finish puts the previous handler back.)
        composed = signal.getsignal(signal.SIGTERM) not in (_on_sigterm, previous)
        timeouts = [run.finish_timeout for run in active_runs()]
        _finish_all(RunStatus.CANCELLED, min([SIGTERM_FINISH_S, *timeouts]))
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and not composed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)  # die as the default action would
    finally:
        _in_sigterm = False


def _watch_sys_exit() -> None:
    """Remember the code `sys.exit` is called with, so that runs still open at exit end as
    failed after ``sys.exit(3)`` (an atexit hook cannot see the exit code otherwise). The
    program's exit code is never changed."""
    current = sys.exit
    if getattr(current, "__sqltrack__", False):
        return

    def exit(status: Any = None) -> Any:
        _exit_code[:] = [status]
        return current(status)

    exit.__sqltrack__ = True  # type: ignore[attr-defined]
    exit.__doc__ = current.__doc__
    sys.exit = exit


def _exit_status() -> RunStatus:
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if exc is None and _exit_code:
        exc = SystemExit(_exit_code[0])
    return status_for(exc)


@atexit.register
def _finish_at_exit() -> None:
    """Finish runs nobody finished: failed after an uncaught exception or ``sys.exit(n)`` with
    n != 0, cancelled after Ctrl-C; all of them within one `finish_timeout` together."""
    runs = active_runs()
    if not runs:
        return
    _finish_all(_exit_status(), max(run.finish_timeout for run in runs))


def at_fork_in_child(callback: Callable[[], None]) -> None:
    """Call `callback` in a forked child, after the runs and spools forgot their parent's."""
    _fork_callbacks.append(callback)


def _after_fork_in_child() -> None:
    """The one fork hook. A forked child (e.g. a DataLoader worker) must never write through,
    or close, the parent's connections, nor finish the parent's runs at its exit. Its runs
    keep working: a later log() opens a connection of the child's own. Our SIGTERM handler
    stays installed (signal dispositions survive fork) and so does the handler recorded
    before it."""
    global _active_lock, _in_sigterm
    _active_lock = threading.RLock()
    for run in list(_active.values()):
        run.forget_after_fork()
    _active.clear()
    _in_sigterm = False
    _spool.after_fork_in_child()
    for callback in _fork_callbacks:
        callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
