"""What goes through a writer's queue besides rows (`Operation`, `Marker`), and its thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["Marker", "Operation", "WriterThread"]


class WriterThread(threading.Thread):
    """The writer's daemon thread, running `loop`. `stop` ends it (`close` writes what waits
    first); the run stays open and the next ``log()`` starts a new thread. Test harnesses that
    stop the daemon threads a test left behind (Lightning's own) look for that method."""

    def __init__(self, loop: Callable[[], None], close: Callable[[], object], label: str) -> None:
        super().__init__(target=loop, name=f"sqltrack-writer-{label}", daemon=True)
        self._close = close

    def stop(self) -> None:
        self._close()


class Operation:
    """A metadata write (status, tags, params, links, checkpoints) run by the writer in order.

    ``fn(backend, run_id)`` runs against whichever database holds the run at that moment:
    the tracking database, or the spool while it is away (with the run's id there).
    """

    __slots__ = ("done", "error", "fn")

    def __init__(self, fn: Callable[[Backend, int], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None


class Marker:
    """A flush request: released once everything queued before it is written, or (unless
    `strict`) safe in the spool while the database is away (then `spooled`)."""

    __slots__ = ("done", "spooled", "strict")

    def __init__(self, strict: bool) -> None:
        self.done = threading.Event()
        self.spooled = False
        self.strict = strict
