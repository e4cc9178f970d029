"""Exceptions raised by sqltrack-core.

Every error the library raises on purpose derives from `SQLTrackError`::

    SQLTrackError
    ├── ConfigurationError           bad URL, bad option value
    │   └── UnsupportedURLError      unknown URL scheme
    ├── MissingDependencyError       an optional package (driver, pandas, click) is not installed
    ├── DatabaseError                a driver error, translated; the original is ``__cause__``
    │   └── DatabaseUnavailableError the server or file cannot be reached or opened
    ├── MigrationError               a schema migration failed or an applied one was changed
    ├── RunStateError                a forbidden run status transition, or use after finish
    ├── NotFoundError                no run / experiment with that id, uuid or name
    └── MetricTypeError              also a `TypeError`: a value that cannot be logged

    SQLTrackWarning                  (a UserWarning) tracking degraded but training goes on
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "MetricTypeError",
    "MigrationError",
    "MissingDependencyError",
    "NotFoundError",
    "RunStateError",
    "SQLTrackError",
    "SQLTrackWarning",
    "UnsupportedURLError",
]


class SQLTrackError(Exception):
    """Base class of every error sqltrack-core raises on purpose."""


class ConfigurationError(SQLTrackError, ValueError):
    """An option or URL has a value sqltrack-core cannot use."""


class UnsupportedURLError(ConfigurationError):
    """The database URL has a scheme sqltrack-core does not know."""


class MissingDependencyError(SQLTrackError, ImportError):
    """An optional dependency needed for this call is not installed."""


class DatabaseError(SQLTrackError):
    """The database driver reported an error; the driver's exception is the ``__cause__``."""


class DatabaseUnavailableError(DatabaseError):
    """The database server or file cannot be reached or opened."""


class MigrationError(SQLTrackError):
    """A schema migration could not be applied, or an applied one has changed on disk."""


class RunStateError(SQLTrackError):
    """A run was asked for a status transition it cannot make, or used after it finished."""


class NotFoundError(SQLTrackError, LookupError):
    """No run or experiment matches the given id, uuid or name."""


class MetricTypeError(SQLTrackError, TypeError):
    """A value passed to `Run.log` is of a type that cannot be stored."""


class SQLTrackWarning(UserWarning):
    """Tracking degraded (database unreachable, a value sent to ``extra``); training goes on."""
