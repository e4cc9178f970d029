"""Helpers shared by the test modules: what the schema records (metric columns, runs rows)."""

from __future__ import annotations

from typing import Any

import sqltrack_core as sqltrack

#: family -> (SQLite declared type, PostgreSQL information_schema data_type)
TABLE_TYPES = {
    "bool": ("BOOLEAN", "boolean"),
    "int": ("BIGINT", "bigint"),
    "float": ("REAL", "double precision"),
    "text": ("TEXT", "text"),
    "json": ("JSON", "jsonb"),
}
#: family -> (SQLite, PostgreSQL) sql_type recorded in metric_columns
RECORDED_TYPES = {
    "bool": ("BOOLEAN", "BOOLEAN"),
    "int": ("BIGINT", "BIGINT"),
    "float": ("REAL", "DOUBLE PRECISION"),
    "text": ("TEXT", "TEXT"),
    "json": ("JSON", "JSONB"),
}


def metric_columns(tracker: sqltrack.Tracker) -> dict[str, tuple[str, str]]:
    """key -> (column_name, sql_type) as recorded in metric_columns."""
    df = tracker.query("SELECT key, column_name, sql_type FROM metric_columns")
    return {k: (c, t) for k, c, t in df.itertuples(index=False)}


def table_columns(tracker: sqltrack.Tracker) -> dict[str, str]:
    """Column name -> declared type of the actual metrics table."""
    if tracker.dialect == "sqlite":
        df = tracker.query("SELECT name, type FROM pragma_table_info('metrics')")
    else:
        df = tracker.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'metrics'"
        )
    return dict(df.itertuples(index=False))


def stored(tracker: sqltrack.Tracker, column: str, run_id: int) -> Any:
    """The raw value of `column` in the runs row of `run_id`."""
    df = tracker.query(f"SELECT {column} FROM runs WHERE id = ?", [run_id])
    assert len(df) == 1
    return df.iloc[0, 0]


def read_status(tracker: sqltrack.Tracker, run_id: int) -> str:
    """The status `tracker.runs` reports (stale heartbeat -> crashed)."""
    df = tracker.runs(where="r.id = ?", args=[run_id])
    return str(df.loc[0, "status"])
