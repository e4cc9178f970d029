"""sqltrack-core: ML experiment tracking that is just SQL, in your own PostgreSQL or SQLite."""

from __future__ import annotations

from ._manage import Deleted
from .errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    MetricTypeError,
    MigrationError,
    MissingDependencyError,
    NotFoundError,
    RunStateError,
    SQLTrackError,
    SQLTrackWarning,
    UnsupportedURLError,
)
from .export import ExportResult
from .lineage import lineage_tree
from .runs import Run, RunStatus
from .tracker import Options, Tracker, connect, start_run

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "Deleted",
    "ExportResult",
    "MetricTypeError",
    "MigrationError",
    "MissingDependencyError",
    "NotFoundError",
    "Options",
    "Run",
    "RunStateError",
    "RunStatus",
    "SQLTrackError",
    "SQLTrackWarning",
    "Tracker",
    "UnsupportedURLError",
    "__version__",
    "connect",
    "lineage_tree",
    "start_run",
]
