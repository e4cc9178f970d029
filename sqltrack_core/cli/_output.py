"""How the commands print: tables that fit the terminal, CSV and JSON, one format per type.

One spelling per type, in every format:

- times: ISO-8601 UTC with milliseconds and ``Z`` (``2026-01-02T03:04:05.678Z``); a time
  without a zone (from `sqltrack sql`) the same without ``Z``;
- booleans: ``true``/``false``; dicts and lists (tags, JSON params and metrics): JSON text;
- NaN: missing (empty in tables and CSV, null in JSON), since the readers' float columns hold a
  missing value as NaN and cannot tell the two apart; but ``NaN`` (a string in JSON, like
  ``Infinity``) where the frame tells a stored NaN from NULL, as `sqltrack sql`'s do
  (``emit(..., nan_shown=True)``); +inf and -inf: ``Infinity`` and
  ``-Infinity`` (a JSON string, as JSON has no infinity; Python's float() and JavaScript's
  Number() read it back);
- floats: whole in CSV and JSON (shortest round-trip form), six significant digits in tables.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from ._table import Column, Kind, layout, note, printable, terminal_width

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "cell",
    "dumps",
    "emit",
    "iso_time",
    "json_default",
    "jsonable",
    "render_table",
    "styled",
    "terminal_width",
    "wrap",
]

_INFINITIES = {math.inf: "Infinity", -math.inf: "-Infinity"}


def iso_time(moment: dt.datetime) -> str:
    """`moment` as ISO-8601 with milliseconds: UTC with ``Z`` when it has a zone."""
    if moment.tzinfo is None:
        return moment.isoformat(timespec="milliseconds")
    utc = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def _missing(value: Any) -> bool:
    return value is None or type(value).__name__ in ("NAType", "NaTType")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data, spelled as every command spells it (see the module)."""
    if _missing(value):
        return None
    if type(value).__module__ == "numpy":
        if type(value).__name__ == "datetime64":  # as a datetime, not nanoseconds
            value = value.astype("datetime64[us]")
        value = value.tolist()  # a scalar's Python value, an array's nested lists
    if isinstance(value, float):
        return None if math.isnan(value) else _INFINITIES.get(value, value)
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return iso_time(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else jsonable(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)  # UUIDs, timedeltas, anything else: its text


def json_default(value: Any) -> Any:
    """A ``json.dumps`` default: what `jsonable` makes of a value json cannot write."""
    return jsonable(value)


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """`value` as JSON text: UTF-8 as it is, ``/`` unescaped, no NaN (see the module)."""
    return json.dumps(jsonable(value), ensure_ascii=False, indent=indent, allow_nan=False)


def cell(value: Any) -> str:
    """`value` as one table cell (missing and NaN: empty)."""
    value = jsonable(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_cell(value: Any) -> Any:
    """`value` as CSV writes it: floats whole (pandas writes their repr), the rest as text."""
    value = jsonable(value)
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return value
    return "" if value is None else cell(value)


def _time_texts(series: pd.Series) -> Any:
    """A datetime64 column as ISO-8601 texts at once (numpy), NaT as None."""
    import numpy as np

    dtype = series.dtype
    aware = getattr(dtype, "tz", None) is not None
    unit = getattr(dtype, "unit", "ns")
    stamps = series.to_numpy(dtype=f"datetime64[{unit}]")  # an aware column in UTC
    texts = np.datetime_as_string(stamps, unit="ms", timezone="UTC" if aware else "naive")
    out = texts.astype(object)
    out[np.isnat(stamps)] = None
    return out


def _kind(series: pd.Series) -> str:
    """'time', 'float' (numpy floats), 'plain' (numpy ints and bools) or 'other'."""
    kind = series.dtype.kind
    if kind == "M":
        return "time"
    if kind == "f" and type(series.dtype).__module__ == "numpy":
        return "float"
    if kind in "iub" and type(series.dtype).__module__ == "numpy":
        return "plain"
    return "other"


def _json_column(series: pd.Series) -> list[Any]:
    import numpy as np

    kind = _kind(series)
    if kind == "time":
        return list(_time_texts(series))
    if kind == "plain":
        return list(series.tolist())
    if kind == "float":
        array = series.to_numpy()
        values: list[Any] = array.tolist()
        for i in np.flatnonzero(~np.isfinite(array)):
            values[i] = jsonable(values[i])
        return values
    return [jsonable(v) for v in series.tolist()]


def _unique(labels: Sequence[Any]) -> list[str]:
    """Column labels as JSON keys, a repeated one numbered (``id``, ``id_2``)."""
    seen: dict[str, int] = {}
    out = []
    for label in map(str, labels):
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}_{seen[label]}")
    return out


def to_json(df: pd.DataFrame) -> str:
    """`df` as a JSON array of one object per row, a line each."""
    names = _unique(list(df.columns))
    columns = [_json_column(df.iloc[:, i]) for i in range(df.shape[1])]
    rows = zip(*columns, strict=True) if columns else ([] for _ in range(len(df)))
    # one object per line: json's C encoder writes each (it does not indent), and a line per
    # row reads and greps well
    encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
    lines = [encode(dict(zip(names, row, strict=True))) for row in rows]
    return "[\n" + ",\n".join(f"  {line}" for line in lines) + "\n]" if lines else "[]"


def _csv_column(series: pd.Series) -> Any:
    import numpy as np

    kind = _kind(series)
    if kind == "time":
        return _time_texts(series)
    if kind == "plain" and series.dtype.kind == "b":
        return ["true" if v else "false" for v in series.tolist()]
    if kind == "plain" or (kind == "float" and not np.isinf(series.to_numpy()).any()):
        return series  # pandas writes numbers in C, NaN as empty
    return [_csv_cell(v) for v in series.tolist()]


def to_csv(df: pd.DataFrame) -> str:
    """`df` as CSV with a header row."""
    out = df.copy(deep=False)
    for i in range(df.shape[1]):
        out.isetitem(i, _csv_column(df.iloc[:, i]))
    text: str = out.to_csv(index=False, lineterminator="\n")
    return text


def _table_kind(series: pd.Series) -> Kind:
    kind = series.dtype.kind
    if kind in "iuf" or str(series.dtype) in ("Int64", "Float64", "Int32", "Float32"):
        return "number"
    return "fixed" if kind in "Mb" or str(series.dtype) == "boolean" else "text"


def _table_column(label: Any, series: pd.Series) -> Column:
    if series.dtype.kind == "M":
        cells = ["" if t is None else str(t) for t in _time_texts(series)]
    else:
        cells = [cell(v) for v in series.tolist()]
    return Column(str(label), cells, _table_kind(series))


def wrap(text: str, width: int | None) -> list[str]:
    """`text` (made safe for a terminal) on lines of at most `width` cells (None: one line)."""
    text = printable(text)
    if width is None:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def styled() -> bool:
    """Whether stdout takes bold text: a terminal, and no ``$NO_COLOR``."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def render_table(
    df: pd.DataFrame,
    *,
    width: int | None,
    title: str | None = None,
    hidden_hint: str | None = None,
    keep: Sequence[str] = (),
    bold: bool = False,
) -> str:
    """`df` as a table within `width` cells (None: no limit), with a note under it when
    columns were hidden or values cut (`hidden_hint` says how to see them; default: the
    CSV and JSON formats). Columns named in `keep` are the last to be hidden."""
    if not df.shape[1]:
        return "(no rows)"
    columns = [_table_column(label, df.iloc[:, i]) for i, label in enumerate(df.columns)]
    style = (lambda text: click.style(text, bold=True)) if bold else str
    fitted = layout(columns, width, title=title, keep=keep, bold=style)
    lines = fitted.lines + note(fitted, width, hidden_hint)
    if not len(df):
        lines.append("(no rows)")
    return "\n".join(lines)


def emit(
    df: pd.DataFrame,
    fmt: str,
    title: str | None = None,
    *,
    hidden_hint: str | None = None,
    keep: Sequence[str] = (),
    notes: Sequence[str] = (),
    nan_shown: bool = False,
) -> None:
    """Print `df` as `fmt` (``table``, ``csv`` or ``json``) on stdout.

    With `nan_shown`, a float NaN is printed as ``NaN`` rather than as missing: for frames
    whose missing values are not NaN (`Tracker.query` keeps NULL apart from a stored NaN).

    A table fits `terminal_width()`: long values are cut, then columns hidden, the columns
    named in `keep` last (they stay in their place); a note under the table names the hidden
    columns and says how to see them: `hidden_hint` (e.g. ``"pick columns with
    --columns"``), by default the CSV and JSON formats. `notes` are lines printed under a
    table, wrapped to the same width (CSV and JSON leave them out).
    """
    if nan_shown:
        df = _nan_as_text(df)
    if fmt == "csv":
        click.echo(to_csv(df), nl=False)
    elif fmt == "json":
        click.echo(to_json(df))
    elif fmt == "table":
        width = terminal_width()
        text = render_table(
            df, width=width, title=title, hidden_hint=hidden_hint, keep=keep, bold=styled()
        )
        click.echo(text)
        for line in notes:
            click.echo("\n".join(wrap(line, width)))
    else:
        raise click.BadParameter(f"unknown format {fmt!r}; expected table, csv or json")


def _nan_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with each float NaN replaced by the text ``NaN`` (its column becomes object)."""
    import pandas as pd

    out: pd.DataFrame = df.copy(deep=False)
    for i in range(df.shape[1]):
        series = df.iloc[:, i]
        if series.dtype.kind not in "fO":
            continue
        values = series.tolist()
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            shown = ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]
            out.isetitem(i, pd.Series(shown, dtype=object, index=df.index))
    return out
