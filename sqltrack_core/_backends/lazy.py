"""`LazyBackend`: a connection opened on first use, and not retried too often after a failure."""

from __future__ import annotations

import time
from typing import Any

from ..errors import DatabaseUnavailableError
from .base import Backend, open_backend

__all__ = ["LazyBackend"]


class LazyBackend:
    """Stands in for a connection not opened yet: after a fork, after `close()`, or while the
    database is away. A failed attempt is not repeated for `_RETRY_S` seconds (a black-holed
    connect blocks for its timeout, and `start_run` must not block training each time), unless
    a writer of the tracker reached the database meanwhile (`reachable`)."""

    _RETRY_S = 30.0

    def __init__(self, url: str, *, failure: DatabaseUnavailableError | None = None) -> None:
        self._url = url
        self._real: Backend | None = None
        self._failure = failure
        self._retry_at = time.monotonic() + self._RETRY_S if failure is not None else 0.0

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            if self._failure is not None and time.monotonic() < self._retry_at:
                raise self._failure
            try:
                self._real = open_backend(self._url)
            except DatabaseUnavailableError as exc:
                self._failure, self._retry_at = exc, time.monotonic() + self._RETRY_S
                raise
        return getattr(self._real, name)

    def reachable(self) -> None:
        """The database answered another connection: try again at the next use."""
        self._failure = None

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
            self._real = None

    def abandon(self) -> None:
        """In a forked child: forget a connection the parent opened, never opening one."""
        if self._real is not None:
            self._real.abandon()
            self._real = None
