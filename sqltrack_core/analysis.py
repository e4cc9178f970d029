"""Readers: runs with per-run aggregations computed in SQL, metric histories, lineage, any SQL.

pandas is imported only inside these functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _json
from ._backends.sqltext import ParamStyle, to_driver
from ._history import datetimes as _datetimes
from ._history import metric_columns
from ._history import read as read_history
from ._history import require_pandas as _require_pandas
from ._runs_query import (
    AGGREGATIONS,
    TIME_COLUMNS,
    RunsQuery,
    build_runs_query,
    check_limit,
    extra_keys,
    parse_metric_specs,
    parse_order,
)
from ._selection import Selection, check_patterns, choose, flatten
from ._suggest import did_you_mean
from .errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from ._backends import Backend

__all__ = ["AGGREGATIONS", "lineage", "query", "run_info", "runs"]


def runs(b: Backend, experiment: str | None = None, **options: Any) -> pd.DataFrame:
    """See `Tracker.runs` (the same keywords, and `stale_after`: a running run whose heartbeat
    is older than that many seconds is reported ``crashed``)."""
    return read_runs(b, experiment, **options).frame


@dataclass
class RunsRead:
    """What `read_runs` returns: the frame, the query it ran with the crashed cutoff it bound
    (`stale`), the params chosen, and each param label's JSON path in ``runs.params``."""

    frame: pd.DataFrame
    query: RunsQuery
    stale: Any
    selection: Selection
    paths: dict[str, tuple[str, ...]]


def read_runs(
    b: Backend,
    experiment: str | None = None,
    *,
    stale_after: float,
    metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
    params: str | Sequence[str] | None = None,
    varying: bool = False,
    where: str | None = None,
    args: Sequence[Any] = (),
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
) -> RunsRead:
    """`runs`, with what views need besides the frame (see `RunsRead`)."""
    _require_pandas()
    import pandas as pd

    specs = parse_metric_specs(metrics)
    order = parse_order(order_by)
    check_limit(limit)
    patterns = check_patterns(params)
    _check_filter(varying, where, args, b.dialect.paramstyle)
    columns = metric_columns(b) if specs or any(isinstance(f, tuple) for f, _ in order) else {}
    chosen = None if experiment is None else (_experiment_id(b, experiment),)
    stale = b.timestamp(time.time() - stale_after)
    query = build_runs_query(
        b.dialect,
        specs=specs,
        order=order,
        columns=columns,
        stale=stale,
        experiment=chosen,
        where=where,
        args=args,
        limit=limit,
        extra_keys=extra_keys(b, specs, order, columns),
    )
    names, rows = b.fetchall(b.sql(query.sql), query.params)
    base = names.index("params") + 1
    paths: dict[str, tuple[str, ...]] = {}
    records = []
    for row in rows:
        record = dict(zip(names[:base], row[:base], strict=False))
        record["uuid"] = str(record["uuid"])
        record["tags"] = _json.decode(record["tags"])
        flatten(_json.decode(record.pop("params")), record, paths)
        shown = zip(specs, query.families, row[base:], strict=False)
        for (key, agg), family, value in shown:
            record[f"{key}:{agg}"] = b.dialect.decode(value, family)
        records.append(record)
    selection = choose(records, sorted(paths), patterns, varying=varying)
    fixed = names[:base]
    fixed.remove("params")
    labels = fixed + selection.columns + [f"{k}:{a}" for k, a in specs]
    df: pd.DataFrame = pd.DataFrame.from_records(records, columns=labels)
    for label in TIME_COLUMNS:  # from the integers the query returned
        position = names.index(label)
        df[label] = _datetimes(tuple(row[position] for row in rows), b.dialect)
    if varying:
        df.attrs["equal_params"] = selection.equal
    return RunsRead(df, query, stale, selection, paths)


def _check_filter(varying: object, where: object, args: Sequence[Any], style: ParamStyle) -> None:
    if not isinstance(varying, bool):
        raise ConfigurationError(f"varying {varying!r} must be True or False")
    if where is not None and not isinstance(where, str):
        raise ConfigurationError(
            f"where {where!r:.80} has type {type(where).__name__}; expected SQL text such as "
            "'r.status = ?'"
        )
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise ConfigurationError(
            f"args {args!r:.80} has type {type(args).__name__}; expected a list of values, one "
            "per ? of where"
        )
    if args and not where:
        raise ConfigurationError(
            f"args {list(args)!r:.80} given without where; they bind the ? placeholders of a "
            "where condition"
        )
    if where:
        to_driver(where, list(args), style)  # one arg per ?, named in the message


def _experiment_id(b: Backend, name: str) -> int:
    """The id of experiment `name`; NotFoundError naming the close ones if there is none."""
    if not isinstance(name, str):
        raise ConfigurationError(
            f"experiment {name!r} has type {type(name).__name__}; expected its name (a str)"
        )
    # By id, looked up first: the planner then knows how many runs the experiment has
    # (PostgreSQL rarely analyzes a table as small as experiments; a join by name left it
    # guessing, and at 20,000 runs it chose an index scan per run: 3x the time).
    _, found = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (name,))
    if found:
        return int(found[0][0])
    _, known = b.fetchall(b.sql("SELECT name FROM experiments"))
    raise NotFoundError(did_you_mean(name, [row[0] for row in known], what="experiment"))


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
    history = read_history(b, [run_id])
    logged = [key for key in history.columns[3:] if not history[key].isna().all()]
    summary = {key: _summary(history, key) for key in logged}
    # count, min and max from SQL, so that `show` and `runs` agree on NaN (PostgreSQL's
    # order: NaN above every number) and on what counts as a value
    numeric = [key for key in logged if "min" in summary[key]]
    specs = [f"{key}:{agg}" for key in logged for agg in ("count",)]
    specs += [f"{key}:{agg}" for key in numeric for agg in ("min", "max")]
    if specs:
        row = runs(b, where="r.id = ?", args=[run_id], stale_after=stale_after, metrics=specs)
        for spec in specs:
            key, _, agg = spec.rpartition(":")
            value: Any = row.loc[0, spec]
            summary[key][agg] = int(value) if agg == "count" else float(value)
    info["metrics"] = summary
    return info


def _summary(history: pd.DataFrame, key: str) -> dict[str, Any]:
    """The last value of `key` in `history` and its step; ``min``/``max`` placeholders for a
    numeric one (filled from SQL by `run_info`)."""
    series = history[key].dropna()
    if series.empty:  # only NaN: the last NaN
        series = history[key]
    entry: dict[str, Any] = {
        "count": int(series.size),
        "last": series.iloc[-1],
        "last_step": int(history.loc[series.index[-1], "step"]),
    }
    try:
        series.astype(float)
    except (TypeError, ValueError):
        return entry
    if history[key].dtype != object or all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in series
    ):
        entry["min"] = entry["max"] = None
    return entry


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
