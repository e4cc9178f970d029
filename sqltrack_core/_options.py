"""`Options`: the tuning knobs of a `Tracker`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._store import DEFAULT_COLUMN_BUDGET
from .errors import ConfigurationError

__all__ = ["Options"]


@dataclass
class Options:
    """Tuning knobs of a `Tracker`; the defaults suit training loops."""

    #: seconds between background flushes
    flush_interval: float = 1.0
    #: queued rows that trigger an early flush
    max_pending: int = 5000
    #: metric columns allowed before new keys go to ``metrics.extra`` (PostgreSQL caps tables at 1,600)
    column_budget: int = DEFAULT_COLUMN_BUDGET
    #: a running run whose heartbeat is older than this many seconds reads as ``crashed``
    stale_after: float = 300.0
    #: seconds `Run.finish` (and the end of the program, for all its runs together) waits for
    #: the last rows to be written while the database is away; then they stay in the spool.
    #: Default: ``$SQLTRACK_FINISH_TIMEOUT``, else 60 (for integrations, which take no options)
    finish_timeout: float = field(
        default_factory=lambda: _env_seconds("SQLTRACK_FINISH_TIMEOUT", 60.0)
    )
    #: seconds a metadata write (tags, params, links) waits before it is left queued
    metadata_timeout: float = 10.0
    #: seconds a write may go unanswered before the connection counts as lost (a black hole)
    write_timeout: float = 10.0

    def check(self) -> None:
        for name in (
            "flush_interval",
            "stale_after",
            "finish_timeout",
            "metadata_timeout",
            "write_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(
                    f"option {name}={value!r} must be a positive number of seconds"
                )
        for name in ("max_pending", "column_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"option {name}={value!r} must be a positive int")
        if self.column_budget > 1500:
            raise ConfigurationError(
                f"option column_budget={self.column_budget!r} is too large; PostgreSQL allows "
                "1,600 columns per table, so use at most 1500"
            )


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(
            f"${name}={text!r} is not a number of seconds; expected e.g. {name}=30"
        ) from None
