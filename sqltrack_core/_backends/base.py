"""The `Backend` protocol every dialect implements, and `open_backend` to pick one by URL."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigurationError, UnsupportedURLError
from .dialect import Dialect

if TYPE_CHECKING:
    from typing_extensions import LiteralString

    from .._columns import Family

#: URL scheme -> dialect name; dialect name -> (backend module in this package, class). The
#: modules are imported when a URL needs them, so a driver that is not installed only matters
#: to its own URLs.
_SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
_BACKENDS = {"sqlite": ("sqlite", "SQLiteBackend"), "postgresql": ("postgres", "PostgresBackend")}


@dataclass
class MetricBatch:
    """Rows for one run, ready to write: one tuple per step, all with the same columns.

    Each row is ``(step, logged_at, value_1, ..., value_n, extra)`` where values line up with
    `columns`, `logged_at` is a Unix time and `extra` is JSON text or None. `fresh` says no step
    was written before by this writer, or every step is past the last one it wrote: the rows
    most likely only add steps (a backend may try a plain insert first, and must still merge
    the steps the run already has).
    """

    run_id: int
    columns: list[tuple[str, Family | None]]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    sql_types: list[str | None] = field(default_factory=list)  # per column, as recorded
    fresh: bool = False


class Backend(Protocol):
    """One open connection to a tracking database, in one SQL dialect.

    Statements are written once with ``?`` placeholders; `sql` adapts them to the driver.
    Nothing outside the backends knows which driver is in use.
    """

    dialect: Dialect
    url: str  # with any password masked
    column_types: dict[Family, str]  # family -> SQL type for new metric columns

    def sql(self, text: LiteralString) -> str:
        """Return `text` with ``?`` placeholders adapted to the driver's paramstyle."""
        ...

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement, in the current transaction if one is open, else on its own."""
        ...

    def fetchall(
        self, sql: str, params: Sequence[Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query and return its column names and rows."""
        ...

    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[None]:
        """Open a transaction; `exclusive` also serialises it against other writers' schema changes."""
        ...

    def read_only(self) -> AbstractContextManager[None]:
        """A transaction in which SQL cannot change anything (for SQL one user wrote and
        another runs: a saved view's condition). PostgreSQL enforces it (READ ONLY); on SQLite
        a SELECT cannot write, so it is a plain read."""
        ...

    def quote(self, name: str) -> str:
        """Quote an identifier for this dialect."""
        ...

    def json_param(self, text: str | None) -> Any:
        """Wrap JSON text so it binds to a JSON column."""
        ...

    def timestamp(self, unix_time: float) -> Any:
        """Convert a Unix time to the value this dialect stores in timestamp columns."""
        ...

    def metric_table_columns(self) -> dict[str, str]:
        """Return the columns of ``metrics`` with their declared SQL types."""
        ...

    def add_metric_column(self, name: str, sql_type: str) -> None:
        """Add a column to ``metrics`` unless it exists (inside an exclusive transaction)."""
        ...

    def widen_metric_column(self, name: str, sql_type: str) -> None:
        """Change a metric column's type so it also stores floats (inside an exclusive transaction)."""
        ...

    def write_metrics(self, batch: MetricBatch, heartbeat: float | None) -> None:
        """Upsert a batch in one transaction, merging into existing steps.

        With a `heartbeat` (Unix time), the same transaction sets the run's ``heartbeat_at``.
        """
        ...

    def apply_script(self, script: str) -> None:
        """Run a multi-statement SQL script inside the current transaction."""
        ...

    def is_disconnect(self, exc: BaseException) -> bool:
        """Whether `exc` means the connection is gone (retry after reconnecting)."""
        ...

    def set_io_timeout(self, seconds: float | None) -> None:
        """Fail a statement as a disconnect after `seconds` without an answer (None: never)."""
        ...

    def interrupt(self) -> None:
        """Make the statement running on this connection fail now (callable from any thread)."""
        ...

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Whether `exc` is DDL giving up on a table lock (retry later; the connection is fine)."""
        ...

    def unix_time(self, value: Any) -> float:
        """Convert a timestamp column's value, as this dialect returns it, to a Unix time."""
        ...

    def reconnect(self) -> None:
        """Drop the current connection and open a new one to the same database."""
        ...

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        ...

    def abandon(self) -> None:
        """Forget the connection without closing it (in a forked child that inherited it)."""
        ...


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_password(url: str) -> str:
    """Return `url` with the password, if any, replaced by ``***``.

    libpq also takes the password as a query parameter (``?password=...``), so that is masked too.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        url = parts._replace(netloc=f"{user}@{netloc[-1]}").geturl()
    return _QUERY_PASSWORD.sub(r"\1***", url)


DEFAULT_URL = "sqlite:///sqltrack.db"


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """Return the URL to use: `url`, else ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``."""
    if url is None:
        url = os.environ.get("SQLTRACK_URL") or DEFAULT_URL
    url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"database URL {url!r} is empty; expected e.g. 'sqlite:///sqltrack.db' or "
            "'postgresql://user@host:5432/db'"
        )
    return url.strip()


def check_scheme(url: str) -> str:
    """Return the dialect of `url` ('sqlite' or 'postgresql') without connecting.

    Raises:
        UnsupportedURLError: any other scheme.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in _SCHEMES:
        return _SCHEMES[scheme]
    raise UnsupportedURLError(
        f"database URL {mask_password(url)!r} has an unsupported scheme {scheme!r}; expected "
        "'sqlite:///relative/path.db', 'sqlite:////absolute/path.db' or "
        "'postgresql://user@host:port/dbname'"
    )


def open_backend(url: str) -> Backend:
    """Open a backend for `url`, translating every failure into a `SQLTrackError`."""
    module_name, class_name = _BACKENDS[check_scheme(url)]
    module = importlib.import_module(f"{__package__}.{module_name}")
    backend: Backend = getattr(module, class_name)(url)
    return backend


def path_from_url(url: str) -> str:
    """Return the file path in a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    if not url.lower().startswith("sqlite:///"):
        raise ConfigurationError(
            f"SQLite URL {url!r} has no path; expected 'sqlite:///relative/path.db' "
            "or 'sqlite:////absolute/path.db'"
        )
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        raise ConfigurationError(
            f"SQLite URL {url!r} names no file; an in-memory database cannot be shared with "
            "the background writer, use a file such as 'sqlite:///sqltrack.db' "
            "(or a temporary directory in tests)"
        )
    return path


def pin_url(url: str) -> str:
    """Return `url` with a relative SQLite path made absolute against the working directory now.

    A tracker opens writer connections later, maybe after the program changed directory (Hydra
    does, per run), and they must reach the file `connect` opened.
    """
    if url.split(":", 1)[0].lower() != "sqlite":
        return url
    path = path_from_url(url)
    if path.startswith("file:") or Path(path).expanduser().is_absolute():
        return url
    return "sqlite:///" + os.path.abspath(path) + url[len("sqlite:///") + len(path) :]


def iter_statements(script: str) -> Iterator[str]:
    """Split a SQLite script into complete statements (triggers and quoted ';' included)."""
    import sqlite3

    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        yield buffer.strip()
