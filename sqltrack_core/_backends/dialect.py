"""What differs between the SQL dialects, as pure objects: no connection, no I/O.

Every module outside `_backends/` asks a backend's ``dialect`` for dialect-specific SQL (time
expressions, JSON decoding, aggregates, bookkeeping DDL, the run owner, placeholders) and
never compares dialect names. A third dialect is one more `Dialect` subclass here, its backend
module, its ``sql/<name>/`` folder, and one line in `_backends.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .. import _json
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import LiteralString

#: (SQL of the value, its params, its family) -> the same for the aggregate over it
AggregateSQL = Callable[[str, list[Any], str | None], tuple[str, list[Any], str | None]]

_BOOKKEEPING = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version     TEXT NOT NULL,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  {timestamp} NOT NULL DEFAULT {now},
    PRIMARY KEY (version, name)
)"""


def _plain(function: str) -> AggregateSQL:
    def aggregate(
        value: str, params: list[Any], family: str | None
    ) -> tuple[str, list[Any], str | None]:
        return f"{function}({value})", params, family

    return aggregate


def _mean(value: str, params: list[Any], family: str | None) -> tuple[str, list[Any], str | None]:
    return f"avg({value})", params, "float"


class Dialect:
    """The SQL one kind of database speaks. Subclasses set the class attributes and override
    what differs; `aggregates` is a registry: a new aggregate is one entry (per dialect only
    where the SQL differs)."""

    name: ClassVar[str]
    #: how drivers of this dialect write placeholders (see `sqltext.to_driver`)
    paramstyle: ClassVar[Literal["qmark", "format"]]
    #: the numpy unit of the integers `epoch_sql` reads times as
    epoch_unit: ClassVar[str]
    #: SQL type and default of a timestamp column (bookkeeping tables)
    timestamp_type: ClassVar[str]
    now_sql: ClassVar[str]
    aggregates: ClassVar[Mapping[str, AggregateSQL]] = {
        "min": _plain("min"),
        "max": _plain("max"),
        "mean": _mean,
    }

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def epoch_sql(self, column: str) -> str:
        """SQL reading the timestamp `column` (a fixed name, never user text) as an integer of
        `epoch_unit` since 1970."""
        raise NotImplementedError

    def decode_json(self, value: Any) -> Any:
        """A JSON column's value as the driver returns it -> Python objects."""
        return value

    def decode(self, value: Any, family: str | None) -> Any:
        """A value of a metric column of `family` (or ``"extra"``), as the driver returns it ->
        the Python value that was logged."""
        if value is None:
            return None
        if family == "float":
            if isinstance(value, str):  # SQLite keeps NaN as the text 'NaN'
                return math.nan if value == "NaN" else float(value)
            return float(value)  # PostgreSQL's Decimal of a NUMERIC column too
        if family == "bool":
            return bool(value)
        if family in ("json", "extra"):
            return self.decode_json(value)
        return value

    def quote(self, name: str) -> str:
        """Quote an identifier."""
        return '"' + name.replace('"', '""') + '"'

    def extra_key(self, key: str) -> str:
        """What to bind for `key` on the right of ``m.extra -> ?`` (a top-level key)."""
        return key

    def extra_number_sql(self) -> tuple[str, int]:
        """SQL reading the key ``?`` of ``m.extra`` as a number (NaN and ±inf included, other
        JSON as NULL), and how many times the key is bound."""
        raise NotImplementedError

    def owner_sql(self, user: str | None) -> tuple[LiteralString, list[Any]]:
        """SQL (and params) for ``runs.owner`` of a run inserted now by `user`."""
        return "?", [user]

    def bookkeeping_ddl(self) -> str:
        """The ``schema_migrations`` table, made before any migration runs."""
        return _BOOKKEEPING.format(timestamp=self.timestamp_type, now=self.now_sql)


def _sqlite_mean(
    value: str, params: list[Any], family: str | None
) -> tuple[str, list[Any], str | None]:
    if family == "float":  # NaN is stored as the text 'NaN': the mean is NaN, as on PostgreSQL
        return (
            f"CASE WHEN max(typeof({value}) = 'text') THEN 'NaN' ELSE avg({value}) END",
            params + params,
            "float",
        )
    return f"avg({value})", params, "float"


class SQLiteDialect(Dialect):
    name = "sqlite"
    paramstyle = "qmark"
    # julianday() keeps milliseconds (the precision of the ISO-8601 text), so rounding to
    # milliseconds gives them back exactly
    epoch_unit = "datetime64[ms]"
    timestamp_type = "TEXT"
    now_sql = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    aggregates = {**Dialect.aggregates, "mean": _sqlite_mean}

    def epoch_sql(self, column: str) -> str:
        return f"CAST(round((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER)"

    def decode_json(self, value: Any) -> Any:
        return _json.decode(value)  # SQLite returns JSON as text

    def extra_key(self, key: str) -> str:
        # SQLite's -> reads a bare text as a path ('a.b' is a nested key, '$x' an error):
        # quote the key as one label; a label cannot hold a double quote
        if '"' in key:
            raise ConfigurationError(
                f"metric key {key!r} holds a double quote and has no column of its own (it "
                "is kept in metrics.extra), which SQLite's JSON paths cannot address; read "
                "it with tracker.metrics() or tracker.query()"
            )
        return f'$."{key}"'

    def extra_number_sql(self) -> tuple[str, int]:
        # NaN and ±inf sit in JSON as {"$float": "NaN"} (see _json.FLOAT_TAG); SQLite's NaN is
        # the text 'NaN', and 9e999 is inf
        return (
            "CASE WHEN json_type(m.extra -> ?) IN ('integer', 'real') THEN m.extra ->> ? "
            "ELSE CASE m.extra -> ? ->> '$.\"$float\"' WHEN 'NaN' THEN 'NaN' "
            "WHEN 'Infinity' THEN 9e999 WHEN '-Infinity' THEN -9e999 END END",
            3,
        )


def _postgres_bool_or_plain(function: str, for_bool: str) -> AggregateSQL:
    def aggregate(
        value: str, params: list[Any], family: str | None
    ) -> tuple[str, list[Any], str | None]:
        return f"{for_bool if family == 'bool' else function}({value})", params, family

    return aggregate


def _postgres_mean(
    value: str, params: list[Any], family: str | None
) -> tuple[str, list[Any], str | None]:
    return f"avg({value}::int)" if family == "bool" else f"avg({value})", params, "float"


class PostgresDialect(Dialect):
    name = "postgresql"
    paramstyle = "format"
    epoch_unit = "datetime64[us]"
    timestamp_type = "TIMESTAMPTZ"
    now_sql = "now()"
    aggregates = {
        **Dialect.aggregates,
        "min": _postgres_bool_or_plain("min", "bool_and"),
        "max": _postgres_bool_or_plain("max", "bool_or"),
        "mean": _postgres_mean,
    }

    def epoch_sql(self, column: str) -> str:
        return f"(extract(epoch FROM {column}) * 1000000)::int8"

    def extra_number_sql(self) -> tuple[str, int]:
        return (
            "(CASE WHEN jsonb_typeof(m.extra -> ?) = 'number' THEN m.extra ->> ? "
            "WHEN m.extra -> ? ->> '$float' IN ('NaN', 'Infinity', '-Infinity') "
            "THEN m.extra -> ? ->> '$float' END)::float8",
            4,
        )

    def owner_sql(self, user: str | None) -> tuple[LiteralString, list[Any]]:
        return "current_user", []  # the database role, whoever the OS user is
