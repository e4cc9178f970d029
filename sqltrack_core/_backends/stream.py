"""Streamed reads: one read-only snapshot of a tracking database, its rows in bounded chunks.

`snapshot(url)` opens a connection of its own (a long export never holds the tracker's reader
lock) and one read transaction on it, so every query of an export sees the same data while
runs keep writing: PostgreSQL ``REPEATABLE READ READ ONLY``, SQLite a deferred ``BEGIN`` (WAL:
writers go on). `Snapshot.chunks` yields rows a chunk at a time, from a server-side cursor on
PostgreSQL (``DECLARE``/``FETCH``) and a stepped statement on SQLite, so memory stays flat
whatever the size of the result. The SQL that differs (times as ISO-8601 text, the keys and
types held in ``extra``) lives here, with the backend it belongs to.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from .base import Backend, open_backend
from .dialect import Dialect
from .postgres import PostgresBackend
from .sqlite import SQLiteBackend
from .sqlite import _translate as _sqlite_error
from .sqltext import to_driver

__all__ = ["Snapshot", "snapshot"]

_cursor_numbers = itertools.count(1)


class Snapshot(Protocol):
    """A read-only, consistent view of one database for the length of an export."""

    dialect: Dialect

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of a small query; ``?`` placeholders (user SQL included, see `sqltext`)."""
        ...

    def chunks(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query, at most `size` at a time; only one chunk is held at once."""
        ...

    def iso_time_sql(self, column: str) -> str:
        """SQL of the timestamp `column` (a fixed name) as ISO-8601 UTC text with
        milliseconds and ``Z`` (``2026-11-28T05:06:21.123Z``), as the commands print times."""
        ...

    def epoch_us_sql(self, column: str) -> str:
        """SQL of the timestamp `column` (a fixed name) as integer microseconds since 1970."""
        ...

    def extra_types_sql(self, among: str) -> str:
        """SQL listing ``(key, family, count)`` of the values in ``m.extra`` of the metric rows
        matching `among` (a condition on ``m``); family is ``bool``, ``int``, ``float`` (tagged
        NaN and ±inf included), ``text``, ``json`` or ``null``."""
        ...


class _SQLiteSnapshot:
    def __init__(self, backend: SQLiteBackend) -> None:
        self.dialect = backend.dialect
        self._backend = backend

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._backend.conn
        self._run(lambda: conn.execute("BEGIN"))
        try:
            yield
        finally:
            # nothing was written: this only ends the snapshot (and never hides an error)
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _run(self, fn: Any) -> Any:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self._backend.path) from exc

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        text, args = to_driver(sql, list(params), "qmark")
        rows: list[tuple[Any, ...]] = self._run(
            lambda: self._backend.conn.execute(text, args).fetchall()  # type: ignore[arg-type]
        )
        return rows

    def chunks(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        text, args = to_driver(sql, list(params), "qmark")
        cursor = self._run(lambda: self._backend.conn.execute(text, args))  # type: ignore[arg-type]
        try:
            while rows := self._run(lambda: cursor.fetchmany(size)):
                yield rows
        finally:
            cursor.close()

    def iso_time_sql(self, column: str) -> str:
        # stored so already; strftime also reads the other ISO forms a user may have written
        return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column})"

    def epoch_us_sql(self, column: str) -> str:
        return f"({self.dialect.epoch_sql(column)} * 1000)"  # stored in milliseconds

    def extra_types_sql(self, among: str) -> str:
        return (
            "SELECT j.key, CASE WHEN j.type IN ('true', 'false') THEN 'bool' "
            "WHEN j.type = 'integer' THEN 'int' WHEN j.type = 'real' THEN 'float' "
            "WHEN j.type = 'text' THEN 'text' WHEN j.type = 'null' THEN 'null' "
            "WHEN j.type = 'object' AND j.value ->> '$.\"$float\"' IN ('NaN', 'Infinity', "
            "'-Infinity') AND (SELECT count(*) FROM json_each(j.value)) = 1 THEN 'float' "
            "ELSE 'json' END AS family, count(*) "
            f"FROM metrics m, json_each(m.extra) j WHERE m.extra IS NOT NULL AND ({among}) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )


class _PostgresSnapshot:
    def __init__(self, backend: PostgresBackend) -> None:
        self.dialect = backend.dialect
        self._backend = backend

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._backend.conn  # autocommit: the transaction is ours to begin and end
        with self._errors():
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield
        finally:
            # read only: a rollback ends the snapshot as a commit would, after an error too
            # (the connection is ours and closed next: a failed rollback hides nothing)
            with contextlib.suppress(self._backend._psycopg.Error):
                if not conn.closed:
                    conn.execute("ROLLBACK")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._backend._psycopg.Error as exc:
            raise self._backend._translate(exc) from exc

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        text, args = to_driver(sql, list(params), "format")
        with self._errors():
            rows: list[tuple[Any, ...]] = self._backend.conn.execute(text, args).fetchall()
        return rows

    def chunks(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        text, args = to_driver(sql, list(params), "format")
        name = f"sqltrack_export_{next(_cursor_numbers)}"
        with self._errors():
            cursor = self._backend.conn.cursor(name=name)
        try:
            with self._errors():
                cursor.execute(text, args)
            while True:
                with self._errors():
                    rows = cursor.fetchmany(size)
                if not rows:
                    return
                yield rows
        finally:
            # after an error the transaction is aborted and CLOSE would fail: the rollback
            # at the end of the snapshot drops the cursor anyway
            with contextlib.suppress(self._backend._psycopg.Error):
                cursor.close()

    def iso_time_sql(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

    def epoch_us_sql(self, column: str) -> str:
        return self.dialect.epoch_sql(column)  # microseconds already

    def extra_types_sql(self, among: str) -> str:
        return (
            "SELECT j.key, CASE jsonb_typeof(j.value) WHEN 'boolean' THEN 'bool' "
            "WHEN 'number' THEN CASE WHEN j.value::text ~ '^-?[0-9]+$' THEN 'int' ELSE 'float' END "
            "WHEN 'string' THEN 'text' WHEN 'null' THEN 'null' "
            "WHEN 'object' THEN CASE WHEN j.value ->> '$float' IN ('NaN', 'Infinity', '-Infinity') "
            "AND (SELECT count(*) FROM jsonb_object_keys(j.value)) = 1 THEN 'float' ELSE 'json' END "
            "ELSE 'json' END AS family, count(*) "
            f"FROM metrics m, jsonb_each(m.extra) j WHERE m.extra IS NOT NULL AND ({among}) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )


@contextmanager
def snapshot(url: str) -> Iterator[Snapshot]:
    """A `Snapshot` of the database at `url` on a connection of its own, closed on exit."""
    backend: Backend = open_backend(url)
    try:
        reader: _SQLiteSnapshot | _PostgresSnapshot
        if isinstance(backend, PostgresBackend):
            reader = _PostgresSnapshot(backend)
        else:
            assert isinstance(backend, SQLiteBackend), backend
            reader = _SQLiteSnapshot(backend)
        with reader.transaction():
            yield reader
    finally:
        backend.close()
