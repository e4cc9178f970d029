"""The runs() query, built without a database (`_runs_query`), table-tested on both dialects."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sqltrack_core import ConfigurationError
from sqltrack_core._backends.dialect import Dialect, PostgresDialect, SQLiteDialect
from sqltrack_core._runs_query import RunsQuery, build_runs_query, parse_metric_specs, parse_order

COLUMNS = {
    "val/acc": ("val_acc", "float"),
    "epoch": ("epoch", "int"),
    "done": ("done", "bool"),
    "cfg": ("cfg", "json"),
}
DIALECTS = [SQLiteDialect(), PostgresDialect()]


def build(
    dialect: Dialect, metrics: list[str], order: str | None = None, **kwargs: Any
) -> RunsQuery:
    return build_runs_query(
        dialect,
        specs=parse_metric_specs(metrics),
        order=parse_order(order),
        columns=COLUMNS,
        stale="STALE",
        **kwargs,
    )


# (metrics, SQLite fragment, PostgreSQL fragment) of the aggregate each spec becomes
AGGREGATES = [
    (["val/acc:max"], 'max(m."val_acc") AS a0', 'max(m."val_acc") AS a0'),
    (["done:max"], 'max(m."done") AS a0', 'bool_or(m."done") AS a0'),
    (["done:mean"], 'avg(m."done") AS a0', 'avg(m."done"::int) AS a0'),
    (["val/acc:mean"], "CASE WHEN max(typeof(", 'avg(m."val_acc") AS a0'),
    (["epoch:count"], 'count(m."epoch") AS a0', 'count(m."epoch") AS a0'),
    (["missing:max"], "json_type(m.extra -> ?)", "jsonb_typeof(m.extra -> ?)"),
]


@pytest.mark.parametrize(("metrics", "sqlite", "postgres"), AGGREGATES)
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_each_aggregate_is_the_dialects_own(
    dialect: Dialect, metrics: list[str], sqlite: str, postgres: str
) -> None:
    """Verify an aggregate comes from the dialect's registry (one SQL per dialect only where
    the databases differ), and its placeholders match its params."""
    query = build(dialect, metrics)
    assert (sqlite if dialect.name == "sqlite" else postgres) in query.sql
    assert query.sql.count("?") == len(query.params)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_filters_order_and_limit_bind_in_order(dialect: Dialect) -> None:
    """Verify the params follow the placeholders: stale time, experiment, where args, the
    experiment again for the aggregate's semi-join, then the limit."""
    query = build(dialect, ["val/acc:last", "epoch:max"], "-epoch:max", experiment=(7,), limit=3)
    assert query.params == ["STALE", 7, 7, 3]
    assert query.sql.count("?") == 4
    assert re.search(r"ORDER BY \(q\.a1 IS NULL\), q\.a1 DESC, q\.id LIMIT \?$", query.sql)
    assert query.families == ["float", "int"]
    where = build(dialect, ["epoch:max"], where="r.name = ?", args=["x"])
    assert where.params == ["STALE", "x"] and "IN (SELECT id FROM sel)" in where.sql


def test_sort_only_aggregates_are_computed_but_not_shown() -> None:
    """Verify ordering by a spec not asked for adds a hidden aggregate (o0), not a column."""
    query = build(SQLiteDialect(), ["val/acc:max"], "epoch:min")
    assert "AS o0" in query.sql and query.families == ["float"]
    assert "ORDER BY (q.o0 IS NULL), q.o0, q.id" in query.sql


@pytest.mark.parametrize(
    ("metrics", "order", "message"),
    [
        (["cfg:max"], None, r"aggregation 'max' needs a numeric metric; 'cfg' holds json"),
        ([], "cfg:last", r"cannot order runs by 'cfg:last': 'cfg' holds JSON"),
        (["val/acc:p95"], None, r"aggregation 'p95' for 'val/acc' is unknown"),
        ([], "name; DROP", r"order_by 'name; DROP' is neither a run column"),
    ],
    ids=["json-max", "json-order", "unknown-agg", "injection"],
)
def test_bad_specs_are_refused_before_any_sql(
    metrics: list[str], order: str | None, message: str
) -> None:
    """Verify what cannot be computed or sorted raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        build(SQLiteDialect(), metrics, order)
