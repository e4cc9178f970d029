"""`RunStatus`, and the status an exception ends a run with."""

from __future__ import annotations

import enum

__all__ = ["RunStatus", "status_for"]


class RunStatus(str, enum.Enum):
    """Status of a run. `CRASHED` is never stored: readers report it for a stale heartbeat."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def status_for(exc: BaseException | None) -> RunStatus:
    """How a run ends after `exc` (None: it ended normally)."""
    if exc is None:
        return RunStatus.COMPLETED
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.CANCELLED
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return RunStatus.COMPLETED
    return RunStatus.FAILED
