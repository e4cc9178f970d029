"""SQLite backend: the standard library's sqlite3, WAL mode, explicit ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _json
from ..errors import DatabaseError, DatabaseUnavailableError
from .base import MetricBatch, iter_statements, path_from_url
from .dialect import Dialect, SQLiteDialect

if TYPE_CHECKING:
    from typing_extensions import LiteralString

    from .._columns import Family

#: SQLite has no NaN (binding one stores NULL), so a NaN goes into a REAL column as this text,
#: which REAL affinity leaves as text; readers turn it back into a float.
NAN_TEXT = "NaN"
BUSY_TIMEOUT_S = 60.0


def _timestamp_text(unix_time: float) -> str:
    stamp = datetime.fromtimestamp(unix_time, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _merge_json(old: str | None, new: str | None) -> str | None:
    """SQL function merging two JSON objects, later keys winning, nulls kept (unlike json_patch)."""
    if old is None:
        return new
    if new is None:
        return old
    merged = _json.loads(old)
    merged.update(_json.loads(new))
    return _json.dumps(merged)


def _nan_as_text(row: tuple[Any, ...], positions: list[int]) -> tuple[Any, ...]:
    """Return `row`, or a copy with each NaN at `positions` replaced by `NAN_TEXT`."""
    for i in positions:
        v = row[i]
        if v != v:  # NaN (None == None, so None stays)
            return tuple(NAN_TEXT if j in positions and x != x else x for j, x in enumerate(row))
    return row


def _translate(exc: sqlite3.Error, path: str) -> DatabaseError:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and (
        "unable to open" in message
        or "disk I/O" in message
        or "readonly" in message
        or "interrupted" in message  # Backend.interrupt(): given up on, like a lost connection
    ):
        return DatabaseUnavailableError(
            f"cannot open SQLite database {path!r}: {message}; check that the directory exists "
            "and is writable"
        )
    return DatabaseError(f"SQLite error on {path!r}: {message}")


class SQLiteBackend:
    """A connection to one SQLite file, usable from any one thread at a time."""

    dialect: Dialect = SQLiteDialect()
    column_types: dict[Family, str] = {
        "bool": "BOOLEAN",
        "int": "BIGINT",
        "float": "REAL",
        "text": "TEXT",
        "json": "JSON",
    }

    #: PRAGMA synchronous of new connections (a subclass may ask for FULL)
    synchronous = "NORMAL"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> None:
        if self.path.startswith("file:"):
            target, uri = self.path, True
        else:
            parent = Path(self.path).expanduser().parent
            if not parent.is_dir():
                raise DatabaseUnavailableError(
                    f"cannot open SQLite database {self.path!r}: directory {str(parent)!r} "
                    "does not exist; create it first or use another path"
                )
            target, uri = str(Path(self.path).expanduser()), False
        try:
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # one owner thread at a time, guarded by self._lock
                uri=uri,
            )
            _enable_wal(conn)  # readers never block the writer
            # NORMAL: durable at checkpoints, safe with WAL; a spool asks for FULL (fsync per commit)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.create_function("sqltrack_merge_json", 2, _merge_json, deterministic=True)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; one closed earlier is opened again here."""
        if self._conn is None:
            self._connect()
            assert self._conn is not None
        return self._conn

    def sql(self, text: LiteralString) -> str:
        return text

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._lock:
            try:
                self.conn.execute(sql, params or ())
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    def fetchall(
        self, sql: str, params: Sequence[Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            try:
                cursor = self.conn.execute(sql, params or ())
                rows = cursor.fetchall()
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
            names = [d[0] for d in cursor.description or ()]
            return names, rows

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock
        # upgrading read locks; the busy timeout makes the second one wait its turn.
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
            try:
                yield
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise _translate(exc, self.path) from exc

    @contextmanager
    def read_only(self) -> Iterator[None]:
        yield  # a SELECT cannot write here, and BEGIN IMMEDIATE would block the writers

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def json_param(self, text: str | None) -> Any:
        return text

    def timestamp(self, unix_time: float) -> Any:
        return _timestamp_text(unix_time)

    def metric_table_columns(self) -> dict[str, str]:
        _, rows = self.fetchall("SELECT name, type FROM pragma_table_info('metrics')")
        return {name: sql_type for name, sql_type in rows}

    def add_metric_column(self, name: str, sql_type: str) -> None:
        if name in self.metric_table_columns():
            return
        self.execute(f"ALTER TABLE metrics ADD COLUMN {self.quote(name)} {sql_type}")

    def widen_metric_column(self, name: str, sql_type: str) -> None:
        # SQLite columns are dynamically typed: an INTEGER-affinity column keeps 1.5 as REAL,
        # so only the bookkeeping in metric_columns changes.
        return None

    def write_metrics(self, batch: MetricBatch, heartbeat: float | None) -> None:
        names = [self.quote(name) for name, _ in batch.columns]
        columns = ", ".join(["run_id", "step", "logged_at", *names, "extra"])
        run_id = int(batch.run_id)  # a literal, so that the batch's rows are bound as they are
        marks = ", ".join(
            [str(run_id), "?", "strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch')"]
            + ["?"] * (len(names) + 1)
        )
        updates = ", ".join(
            ["logged_at = excluded.logged_at"]
            + [f"{n} = coalesce(excluded.{n}, metrics.{n})" for n in names]
            + ["extra = sqltrack_merge_json(metrics.extra, excluded.extra)"]
        )
        statement = (
            f"INSERT INTO metrics ({columns}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, step) DO UPDATE SET {updates}"
        )
        float_positions = [i + 2 for i, (_, fam) in enumerate(batch.columns) if fam == "float"]
        rows = batch.rows
        if float_positions:
            rows = [_nan_as_text(row, float_positions) for row in rows]
        with self.transaction():
            try:
                self.conn.executemany(statement, rows)
                if heartbeat is not None:
                    self.conn.execute(
                        "UPDATE runs SET heartbeat_at = ? WHERE id = ?",
                        (_timestamp_text(heartbeat), run_id),
                    )
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    def apply_script(self, script: str) -> None:
        # executescript() would COMMIT the open transaction first; run statements one by one.
        for statement in iter_statements(script):
            self.execute(statement)

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, DatabaseUnavailableError) or (
            isinstance(exc, DatabaseError) and "locked" in str(exc)
        )

    def set_io_timeout(self, seconds: float | None) -> None:
        return None  # a local file: the busy timeout bounds every wait

    def interrupt(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return False  # the busy timeout waits for locks; a lock it gives up on is a disconnect

    def unix_time(self, value: Any) -> float:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()

    def reconnect(self) -> None:
        self.close()
        self._connect()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def abandon(self) -> None:
        _ABANDONED.append(self._conn)
        self._conn = None


# Connections inherited by a forked child are kept referenced here so that garbage
# collection never closes them (closing would release the parent's file locks).
_ABANDONED: list[Any] = []


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode once. The switch needs the file to itself and SQLite may
    refuse it at once ("database is locked") while other processes open it too, busy timeout
    or not; so retry with backoff, within the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
