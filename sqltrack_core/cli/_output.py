"""How the commands print: tables (rich), CSV and JSON, one format per type."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import MissingDependencyError
from ._missing import MISSING_CLI

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["cell", "emit", "json_default"]


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    text = str(value)
    return "" if text in ("NaT", "<NA>") else text


def json_default(value: Any) -> Any:
    """numpy scalars as their Python value (not their str), NaT as null, the rest as text."""
    import pandas as pd

    if value is pd.NaT:
        return None
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return str(value)


def _iso_times(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its timezone-aware datetime columns as ISO-8601 UTC text (NaT as empty).

    What `--format json` and SQLite write too; and numpy formats a column at once, where
    to_csv formats each Timestamp in Python (two thirds of a 1,000-step CSV's time).
    """
    import numpy as np
    import pandas as pd

    times = {c: t for c, t in df.dtypes.items() if isinstance(t, pd.DatetimeTZDtype)}
    if not times:
        return df
    df = df.copy(deep=False)
    for column, dtype in times.items():
        # a tz-aware column converts to UTC datetime64 of its own unit
        stamps = df[column].to_numpy(dtype=f"datetime64[{dtype.unit}]")
        text = np.datetime_as_string(stamps, timezone="UTC")
        text[np.isnat(stamps)] = ""
        df[column] = text
    return df


def emit(df: pd.DataFrame, fmt: str, title: str | None = None) -> None:
    if fmt == "csv":
        click.echo(_iso_times(df).to_csv(index=False), nl=False)
        return
    if fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", default_handler=str, indent=2))
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError as exc:
        raise MissingDependencyError(MISSING_CLI) from exc
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in df.columns:
        numeric = df[column].dtype.kind in "iuf" or str(df[column].dtype) in (
            "Int64",
            "Float64",
        )
        table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(cell(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
