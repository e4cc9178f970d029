"""A saved view as one SELECT for plain SQL tools: the runs query with its values inlined.

Why a statement to copy rather than a real SQL view (``CREATE VIEW``) made on save:

- PostgreSQL refuses ``ALTER TABLE metrics ALTER COLUMN ... TYPE`` on a column a view uses, and
  the writer widens an int metric column to float when a fractional value arrives: one saved
  view would turn every such write into an error for every process logging to the database.
- A SQL view is fixed when it is made, a saved view is not: a metric key logged later, a new
  param a glob matches, ``varying`` (a property of the runs returned) and the crashed status
  (which needs the time now) would all be frozen or wrong.
- ``CREATE VIEW`` needs the CREATE privilege on the schema, which read-only analysts lack
  (issue 13's roles), and a PostgreSQL view runs with its owner's privileges, so it would read
  past the row-level security planned there.

So a view lives as JSON in the ``views`` table (readable by any SQL tool), and this module
makes, on demand, the SELECT of what the view shows now (``sqltrack views show NAME --sql``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ._backends.sqltext import to_driver
from ._runs_query import TIME_COLUMNS
from ._selection import PREFIX
from .errors import ConfigurationError, SQLTrackError

if TYPE_CHECKING:
    from ._backends.dialect import Dialect
    from .analysis import RunsRead

__all__ = ["literal", "render_view_sql"]

#: where the outermost SELECT of `build_runs_query`'s statement starts (its list is replaced)
_OUTER = " SELECT * FROM (SELECT sel.*"
#: JSON keys that ``->`` / ``->>`` read as the same key on SQLite and PostgreSQL (SQLite reads
#: a right operand as a JSON path: dots, brackets, quotes and a leading digit mean otherwise)
_PORTABLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-/]*\Z")
_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def literal(value: Any) -> str:
    """`value` as an SQL literal both databases read alike (text quoted, ``'`` doubled)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"{value!r} has no SQL literal; bind it as a parameter")
        return repr(value)
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).isoformat()
    if isinstance(value, UUID):
        value = str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ConfigurationError(
        f"{value!r:.80} (a {type(value).__name__}) has no SQL literal; use a str, int, float, "
        "bool or None"
    )


def render_view_sql(
    dialect: Dialect, view: dict[str, Any], read: RunsRead, *, stale_after: float
) -> str:
    """The SELECT that `read` ran for `view`, values inlined, with readable times, one column
    per param shown and the status computed when it runs; comments above say what it is."""
    query = read.query
    text, _ = to_driver(query.sql, query.params, "format")
    body: str = text % tuple(literal(value) for value in query.params)
    position = body.find(_OUTER)
    if position < 0:
        raise SQLTrackError(
            "internal error: the runs query has no outer SELECT to name the view's columns in"
        )
    params, skipped = _param_columns(dialect, read)
    specs = list(read.frame.columns[len(read.frame.columns) - len(query.families) :])
    columns = [
        "q.id",
        "q.uuid",
        "q.experiment",
        "q.name",
        _status(dialect, stale_after),
        *(f"(SELECT r.{c} FROM runs r WHERE r.id = q.id) AS {c}" for c in TIME_COLUMNS),
        "q.owner",
        "q.tags",
        "q.comment",
        *params,
        *(f"q.a{i} AS {dialect.quote(label)}" for i, label in enumerate(specs)),
    ]
    select = " SELECT " + ",\n  ".join(columns) + "\nFROM (SELECT sel.*"
    body = body[:position] + "\n" + select + body[position + len(_OUTER) :]
    return "\n".join([*_header(view, skipped, stale_after), body.strip() + ";"]) + "\n"


def _status(dialect: Dialect, stale_after: float) -> str:
    """The status as `runs` reports it, against the clock of the database that runs it."""
    unit = dialect.epoch_unit[dialect.epoch_unit.index("[") + 1 : -1]
    now = dialect.epoch_sql(dialect.now_sql)
    stale = round(stale_after * _UNITS[unit])
    return (
        "CASE WHEN q.status IN ('running', 'crashed') THEN CASE WHEN "
        f"COALESCE(q.heartbeat_at, q.started_at, q.created_at) < {now} - {stale} "
        "THEN 'crashed' ELSE 'running' END ELSE q.status END AS status"
    )


def _param_columns(dialect: Dialect, read: RunsRead) -> tuple[list[str], list[str]]:
    """``q.params -> 'a' ->> 'b' AS "params.a.b"`` per param shown, and the labels left out."""
    columns, skipped = [], []
    for label in read.selection.columns:
        path = read.paths.get(label) or tuple(label[len(PREFIX) :].split("."))
        if not all(_PORTABLE_KEY.match(key) for key in path):
            skipped.append(label)
            continue
        steps = [f" -> {literal(key)}" for key in path[:-1]] + [f" ->> {literal(path[-1])}"]
        columns.append(f"q.params{''.join(steps)} AS {dialect.quote(label)}")
    return columns, skipped


def _header(view: dict[str, Any], skipped: list[str], stale_after: float) -> list[str]:
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    updated = view["updated_at"].isoformat(timespec="seconds")
    lines = [
        f"-- sqltrack view {view['name']!r} (owner {view['owner']!r}, updated {updated}), "
        f"as SQL made {made}",
        "-- for the metric columns and params of now: make it again after new ones appear",
        f"-- (sqltrack views show {view['name']!r} --sql). Times are the runs table's; a",
        f"-- running run whose heartbeat is older than {stale_after:g} s shows as 'crashed'.",
    ]
    if view["experiment"] is not None:
        lines.append(f"-- experiment {view['experiment']!r} is selected by its id below")
    if skipped:
        shown = ", ".join(map(repr, skipped))
        lines.append(f"-- left out (keys SQLite would read as JSON paths): {shown}")
    return lines
