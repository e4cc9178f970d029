"""Readers: runs with per-run aggregations computed in SQL, metric histories, lineage, any SQL.

pandas is imported only inside these functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _json
from ._backends.sqltext import to_driver
from ._columns import Family, family_of_sql_type
from ._runs_query import (
    AGGREGATIONS,
    TIME_COLUMNS,
    build_runs_query,
    check_limit,
    parse_metric_specs,
    parse_order,
)
from .errors import MissingDependencyError

if TYPE_CHECKING:
    import pandas as pd

    from ._backends import Backend
    from ._backends.dialect import Dialect

__all__ = ["AGGREGATIONS", "lineage", "metrics", "query", "run_info", "runs"]


def _require_pandas() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "reading runs into DataFrames needs pandas, which is not installed; "
            "run: pip install 'sqltrack-core[pandas]'"
        ) from exc


def metric_columns(backend: Backend) -> dict[str, tuple[str, Family | None]]:
    """Logged key -> (column name, family), in the order the columns were made."""
    _, rows = backend.fetchall(
        "SELECT key, column_name, sql_type FROM metric_columns ORDER BY created_at, column_name"
    )
    return {key: (name, family_of_sql_type(sql_type)) for key, name, sql_type in rows}


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, into)
    else:
        into[prefix] = value


def runs(
    b: Backend,
    experiment: str | None = None,
    *,
    stale_after: float,
    metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
    where: str | None = None,
    args: Sequence[Any] = (),
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """See `Tracker.runs`; a running run whose heartbeat is older than `stale_after` seconds
    is reported ``crashed``."""
    _require_pandas()
    import pandas as pd

    specs = parse_metric_specs(metrics)
    order = parse_order(order_by)
    check_limit(limit)
    columns = metric_columns(b) if specs or any(isinstance(f, tuple) for f, _ in order) else {}
    chosen = None
    if experiment is not None:
        # By id, looked up first: the planner then knows how many runs the experiment has
        # (PostgreSQL rarely analyzes a table as small as experiments; a join by name left it
        # guessing, and at 20,000 runs it chose an index scan per run: 3x the time).
        _, found = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (experiment,))
        chosen = (found[0][0] if found else None,)
    query = build_runs_query(
        b.dialect,
        specs=specs,
        order=order,
        columns=columns,
        stale=b.timestamp(time.time() - stale_after),
        experiment=chosen,
        where=where,
        args=args,
        limit=limit,
    )
    names, rows = b.fetchall(b.sql(query.sql), query.params)
    records = []
    base = names.index("params") + 1
    for row in rows:
        record = dict(zip(names[:base], row[:base], strict=False))
        record["uuid"] = str(record["uuid"])
        record["tags"] = _json.decode(record["tags"])
        run_params: dict[str, Any] = _json.decode(record.pop("params")) or {}
        for key, value in run_params.items():
            _flatten(f"params.{key}", value, record)
        shown = zip(specs, query.families, row[base:], strict=False)
        for (key, agg), family, value in shown:
            record[f"{key}:{agg}"] = b.dialect.decode(value, family)
        records.append(record)
    fixed = names[:base]
    fixed.remove("params")
    param_columns = sorted({k for r in records for k in r if k.startswith("params.")})
    labels = fixed + param_columns + [f"{k}:{a}" for k, a in specs]
    df: pd.DataFrame = pd.DataFrame.from_records(records, columns=labels)
    for label in TIME_COLUMNS:  # from the integers the query returned
        position = names.index(label)
        df[label] = _datetimes(tuple(row[position] for row in rows), b.dialect)
    return df


_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean"}


def metrics(b: Backend, ids: list[int], keys: Iterable[str] | None = None) -> pd.DataFrame:
    """See `Tracker.metrics`.

    A metric whose key is one of the frame's own columns (``run_id``, ``step``, ``logged_at``)
    is shown with a trailing underscore (``step_``), as `sanitize` does for reserved words.
    """
    _require_pandas()
    import numpy as np
    import pandas as pd

    columns = metric_columns(b)
    wanted = None if keys is None else list(dict.fromkeys(keys))
    if not ids:
        labels = _labels(list(columns) if wanted is None else wanted)
        empty_frame: pd.DataFrame = pd.DataFrame(columns=[*_FRAME_COLUMNS, *labels])
        return empty_frame
    selected = [(k, columns[k]) for k in (columns if wanted is None else wanted) if k in columns]
    # one run's history (the common case) leaves out run_id: it is known, and every fetched
    # column costs a Python object per row
    fixed = ["step", b.dialect.epoch_sql("logged_at")]
    if len(ids) > 1:
        fixed.insert(0, "run_id")
    marks = ", ".join("?" for _ in ids)
    select = ", ".join([*fixed, *(b.quote(c[0]) for _, c in selected), "extra"])
    _names, rows = b.fetchall(
        b.sql(f"SELECT {select} FROM metrics WHERE run_id IN ({marks}) ORDER BY run_id, step"),
        ids,
    )
    # One tuple per column (zip runs in C); an empty result still has every column.
    raw: list[tuple[Any, ...]] = list(zip(*rows, strict=True))
    raw = raw or [()] * (len(fixed) + len(selected) + 1)
    size = len(rows)
    start = len(fixed)
    stored = {key: raw[position] for position, (key, _) in enumerate(selected, start=start)}
    # Columns go in as arrays, so that the frame has no indexes to align; they are built
    # from the raw values (pandas inferring first would turn a missing int into a float64
    # NaN, rounding big ints, a missing bool into True, and a NaN into "missing").
    arrays = {
        key: _column_array(values, columns[key][1], b.dialect) for key, values in stored.items()
    }
    extras = _extras(raw[-1], wanted)
    if wanted is None:  # keep only metrics these runs logged
        shown = [k for k in stored if k in extras or arrays[k] is not None]
        shown += [k for k in extras if k not in stored]
    else:
        shown = wanted
    data: dict[str, Any] = {
        "run_id": (
            np.full(size, ids[0], dtype=np.int64)
            if len(ids) == 1
            else np.fromiter(raw[0], dtype=np.int64, count=size)
        ),
        "step": np.fromiter(raw[start - 2], dtype=np.int64, count=size),
        "logged_at": _datetimes(raw[start - 1], b.dialect),
    }
    for key, label in zip(shown, _labels(shown), strict=True):
        values = stored.get(key)
        extra = extras.get(key)
        if values is None:  # no column: only in extra, or not logged at all
            data[label] = pd.Series(extra or [None] * size, dtype=object)
        elif extra is not None:  # a key with a column whose value did not fit it at some steps
            family = columns[key][1]
            merged = [
                e if v is None else b.dialect.decode(v, family)
                for v, e in zip(values, extra, strict=True)
            ]
            data[label] = pd.Series(merged, dtype=object)
        else:
            array = arrays[key]
            if array is None:  # asked for by key, never logged by these runs
                array = _column_array(values, columns[key][1], b.dialect, empty=True)
            data[label] = array
    df: pd.DataFrame = pd.DataFrame(data, copy=False)  # columns in insertion order
    return df


def _extras(column: tuple[Any, ...], wanted: list[str] | None) -> dict[str, list[Any]]:
    """Key -> its value at each row, from the ``extra`` JSON column (`wanted` keys only)."""
    extras: dict[str, list[Any]] = {}
    size = len(column)
    if column.count(None) == size:
        return extras
    for position, extra in enumerate(column):
        if extra is None:
            continue
        for key, value in _json.decode(extra).items():
            if wanted is None or key in wanted:
                extras.setdefault(key, [None] * size)[position] = value
    return extras


def _datetimes(values: tuple[Any, ...], dialect: Dialect) -> Any:
    """Timezone-aware datetimes (UTC, microseconds) from the integers ``dialect.epoch_sql``
    reads times as (numpy reads them as datetimes at once, where psycopg would build a
    datetime and pandas parse a text per row); None -> NaT."""
    import numpy as np
    import pandas as pd

    try:
        stamps = np.fromiter(values, dtype=np.int64, count=len(values))
    except TypeError:  # a None: NaT is int64's minimum
        nat = np.iinfo(np.int64).min
        stamps = np.array([nat if v is None else v for v in values], dtype=np.int64)
    moments = stamps.view(dialect.epoch_unit).astype("datetime64[us]")
    return pd.DatetimeIndex(moments).tz_localize("UTC").array


def _column_array(
    values: tuple[Any, ...], family: Family | None, dialect: Dialect, *, empty: bool = False
) -> Any:
    """A metric column as an array of its family's dtype; None if every value is missing.

    `empty` returns the array of a column of missing values instead of None.
    """
    import numpy as np
    import pandas as pd

    if family == "float":
        # float() of each value, as `_decode` does (SQLite's 'NaN' text and PostgreSQL's
        # Decimal of a NUMERIC column become floats), and None -> NaN
        floats = np.fromiter(values, dtype=np.float64, count=len(values))
        if empty or not np.isnan(floats).all() or values.count(None) < len(values):
            return floats
        return None
    if not empty and values.count(None) == len(values):
        return None
    if family == "int":
        return pd.array(values, dtype="Int64")
    if family == "bool" and {type(v) for v in values} <= {bool, type(None)}:
        return pd.array(values, dtype="boolean")
    decoded = [dialect.decode(v, family) for v in values]
    # text and unknown types: a Series infers the dtype (str for text) as before
    return pd.Series(decoded, dtype=_DTYPES.get(family or "")).array


_FRAME_COLUMNS = ("run_id", "step", "logged_at")


def _labels(keys: list[str]) -> list[str]:
    """Frame column labels for metric `keys`: the keys, except those equal to a frame column."""
    used = {*_FRAME_COLUMNS, *keys}
    labels = []
    for key in keys:
        label = key
        if key in _FRAME_COLUMNS:
            while label in used:
                label += "_"
            used.add(label)
        labels.append(label)
    return labels


def lineage(b: Backend, run_id: int) -> pd.DataFrame:
    """See `Tracker.lineage`: one row per link on a path to or from the run."""
    _require_pandas()
    import pandas as pd

    text = (
        "WITH RECURSIVE up (from_run_id, kind, to_run_id, depth, evidence) AS ("
        " SELECT from_run_id, kind, to_run_id, 1, evidence FROM run_links WHERE from_run_id = ?"
        " UNION SELECT l.from_run_id, l.kind, l.to_run_id, up.depth + 1, l.evidence"
        " FROM run_links l JOIN up ON l.from_run_id = up.to_run_id WHERE up.depth < 100),"
        " down (from_run_id, kind, to_run_id, depth, evidence) AS ("
        " SELECT from_run_id, kind, to_run_id, 1, evidence FROM run_links WHERE to_run_id = ?"
        " UNION SELECT l.from_run_id, l.kind, l.to_run_id, down.depth + 1, l.evidence"
        " FROM run_links l JOIN down ON l.to_run_id = down.from_run_id WHERE down.depth < 100),"
        " edges AS (SELECT 'ancestor' AS relation, to_run_id AS run_id, depth, kind, from_run_id,"
        " to_run_id FROM up UNION ALL SELECT 'descendant', from_run_id, depth, kind,"
        " from_run_id, to_run_id FROM down),"
        # links made by hand can form cycles: keep each link once, at its shortest depth, and
        # never list the run as its own ancestor or descendant
        " shortest AS (SELECT relation, run_id, min(depth) AS depth, kind, from_run_id, to_run_id"
        " FROM edges WHERE run_id <> ? GROUP BY relation, run_id, kind, from_run_id, to_run_id)"
        " SELECT s.relation, s.depth, s.run_id, r.uuid, e.name AS experiment,"
        " r.name, r.status, s.kind, s.from_run_id, s.to_run_id, l.evidence"
        " FROM shortest s JOIN runs r ON r.id = s.run_id"
        " JOIN experiments e ON e.id = r.experiment_id"
        " JOIN run_links l ON l.from_run_id = s.from_run_id AND l.kind = s.kind"
        " AND l.to_run_id = s.to_run_id"
        " ORDER BY s.relation, s.depth, s.run_id, s.kind"
    )
    names, rows = b.fetchall(b.sql(text), (run_id, run_id, run_id))
    df: pd.DataFrame = pd.DataFrame.from_records(rows, columns=names)
    df["uuid"] = df["uuid"].astype(str)
    df["evidence"] = [_json.decode(v) for v in df["evidence"]]
    return df


def run_info(b: Backend, run_id: int, *, stale_after: float) -> dict[str, Any]:
    """See `Tracker.run_info`."""
    frame = runs(b, where="r.id = ?", args=[run_id], stale_after=stale_after)
    info: dict[str, Any] = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
    _, rows = b.fetchall(b.sql("SELECT env FROM runs WHERE id = ?"), (run_id,))
    info["env"] = _json.decode(rows[0][0])
    _, links = b.fetchall(
        b.sql(
            "SELECT 'out' AS direction, kind, to_run_id AS other, evidence FROM run_links WHERE from_run_id = ?"
            " UNION ALL SELECT 'in', kind, from_run_id, evidence FROM run_links WHERE to_run_id = ?"
        ),
        (run_id, run_id),
    )
    info["links"] = [
        {"direction": d, "kind": k, "run_id": o, "evidence": _json.decode(e)}
        for d, k, o, e in links
    ]
    history = metrics(b, [run_id])
    summary = {}
    for key in history.columns[3:]:
        series = history[key].dropna()
        if series.empty:
            continue
        entry: dict[str, Any] = {
            "count": int(series.size),
            "last": series.iloc[-1],
            "last_step": int(history.loc[series.index[-1], "step"]),
        }
        try:
            numeric = series.astype(float)
            entry["min"], entry["max"] = float(numeric.min()), float(numeric.max())
        except (TypeError, ValueError):
            pass
        summary[key] = entry
    info["metrics"] = summary
    return info


def query(
    b: Backend, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """See `Tracker.query`: ``?`` or ``:name`` placeholders on every backend (`sqltext`)."""
    _require_pandas()
    import pandas as pd

    text, args = to_driver(sql, params, b.dialect.paramstyle)
    names, rows = b.fetchall(text, args)  # type: ignore[arg-type]
    df: pd.DataFrame = pd.DataFrame.from_records(rows, columns=names)
    if rows:
        for i, values in enumerate(zip(*rows, strict=True)):
            if None in values:
                nullable = _nullable(values)
                if nullable is not None:
                    df.isetitem(i, nullable)
    return df


def _nullable(values: tuple[Any, ...]) -> Any:
    """A column with NULLs whose NULLs pandas would turn into NaN (numbers, text), typed so
    that NULL stays missing and apart from a stored NaN, and ints stay ints; None to keep
    what pandas made (times: NaT)."""
    import pandas as pd

    kinds = {type(value) for value in values if value is not None}
    if not kinds or not kinds <= {bool, int, float, str}:
        return None
    if kinds == {bool}:
        return pd.array(values, dtype="boolean")
    if kinds == {int}:
        return pd.array(values, dtype="Int64")
    if kinds <= {int, float} and not any(v != v for v in values if type(v) is float):
        return pd.array(values, dtype="Float64")
    return pd.Series(values, dtype=object)  # NaN and NULL both, or text: as they are
