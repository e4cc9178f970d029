"""`Prober`: reconnects to a database that went away, off the writer thread, with backoff."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._warn import logger
from .errors import SQLTrackError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["Prober"]

_MAX_BACKOFF_S = 30.0


class Prober:
    """Tries one connection at a time in a thread of its own (a black-holed connect blocks for
    its timeout, and the writer must go on spooling meanwhile), 0.5 s to 30 s apart; the
    writer takes the connection it got with `take`, and `wake` is called when there is one."""

    def __init__(self, open_backend: Callable[[], Backend], wake: Callable[[], None], label: str):
        self._open_backend = open_backend
        self._wake = wake
        self._label = label
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._failures = 0
        self._next = 0.0
        self._ended = False  # the writer stopped (a probe that connects after it closes)

    def start_over(self, delay: float = 0.5) -> None:
        """The database was just lost: the first try in `delay` seconds, backoff from scratch."""
        self._failures = 0
        self._next = time.monotonic() + delay

    def restart(self) -> None:
        """The writer's thread starts (again): connections made from now on are taken."""
        self._ended = False

    def due_now(self) -> None:
        """Try again at once (a run is ending: one more chance before it spools)."""
        self._next = 0.0

    def take(self) -> Backend | None:
        """A connection the probe made, if it got one; else start a probe when one is due."""
        with self._lock:
            backend, self._backend = self._backend, None
            if backend is not None:
                return backend
            busy = self._thread is not None and self._thread.is_alive()
            if not busy and time.monotonic() >= self._next:
                self._thread = threading.Thread(
                    target=self._once, name=f"sqltrack-probe-{self._label}", daemon=True
                )
                self._thread.start()
        return None

    def end(self) -> None:
        """The writer stopped: close a connection made meanwhile, and any made later."""
        with self._lock:
            self._ended = True
            probed, self._backend = self._backend, None
        if probed is not None:
            with contextlib.suppress(SQLTrackError):
                probed.close()

    def _once(self) -> None:
        backend: Backend | None = None
        try:
            backend = self._open_backend()
            backend.fetchall("SELECT 1")
        except Exception as exc:
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.close()
            self._failures += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** min(self._failures, 8))
            self._next = time.monotonic() + delay
            logger.debug(
                "sqltrack: the database still does not answer (%s); next try in %g s", exc, delay
            )
            return
        with self._lock:
            if self._ended:  # the writer stopped while this probe was connecting
                with contextlib.suppress(SQLTrackError):
                    backend.close()
                return
            self._backend = backend
        self._wake()
