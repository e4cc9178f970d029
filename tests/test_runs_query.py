"""The runs() query, built without a database (`_runs_query`), table-tested on both dialects."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sqltrack_core import ConfigurationError, NotFoundError
from sqltrack_core._backends.dialect import Dialect, PostgresDialect, SQLiteDialect
from sqltrack_core._runs_query import (
    RunsQuery,
    build_runs_query,
    extra_keys_sql,
    parse_metric_specs,
    parse_order,
)

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


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_table_aggregates_read_only_the_selected_runs(dialect: Dialect) -> None:
    """Verify that argmax, computed in a table of its own, filters its rows as g does (the
    experiment bound again for it) and is joined to the runs by run id."""
    query = build(dialect, ["val/acc:argmax", "epoch:max"], experiment=(7,), limit=3)
    assert query.params == ["STALE", 7, 7, 7, 3]
    assert ", t_a0 AS (SELECT t.run_id, t.step AS v FROM" in query.sql
    assert query.sql.count("m.run_id IN (SELECT id FROM runs WHERE experiment_id = ?)") == 2
    assert "LEFT JOIN t_a0 ON t_a0.run_id = sel.id" in query.sql and "t_a0.v AS a0" in query.sql
    where = build(dialect, ["val/acc:argmin"], where="r.name = ?", args=["x"])
    assert (
        where.params == ["STALE", "x"]
        and "FROM metrics m WHERE m.run_id IN (SELECT id FROM sel)" in where.sql
    )


def test_sort_only_aggregates_are_computed_but_not_shown() -> None:
    """Verify ordering by a spec not asked for adds a hidden aggregate (o0), not a column."""
    query = build(SQLiteDialect(), ["val/acc:max"], "epoch:min")
    assert "AS o0" in query.sql and query.families == ["float"]
    assert "ORDER BY (q.o0 IS NULL), q.o0, q.id" in query.sql


@pytest.mark.parametrize(
    ("metrics", "order", "message"),
    [
        (["cfg:max"], None, r"aggregation 'max' needs a metric that is not JSON; 'cfg' holds json"),
        ([], "cfg:last", r"cannot order runs by 'cfg:last': 'cfg' holds JSON"),
        ([], "cfg:at=3", r"cannot order runs by 'cfg:at=3': 'cfg' holds JSON"),
        (["cfg:argmax"], None, r"aggregation 'argmax' needs a metric that is not JSON"),
        (["done:p90"], None, r"aggregation 'p90' needs a numeric \(int or float\) metric; 'done'"),
        (["cfg:mean_last=3"], None, r"aggregation 'mean_last=3' needs a numeric or bool metric"),
        (["val/acc:maxx"], None, r"^no aggregate 'maxx'; did you mean 'max' or 'argmax'\?$"),
        ([], "name; DROP", r"order_by 'name; DROP' is neither a run column"),
    ],
    ids=[
        "json-max",
        "json-order",
        "json-order-at",
        "json-argmax",
        "bool-percentile",
        "json-mean-last",
        "unknown-agg",
        "injection",
    ],
)
def test_bad_specs_are_refused_before_any_sql(
    metrics: list[str], order: str | None, message: str
) -> None:
    """Verify what cannot be computed or sorted raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        build(SQLiteDialect(), metrics, order)


# -- the spec grammar -------------------------------------------------------------------------

SPEC_FORMS = [
    # (as written, (key, canonical aggregate))
    ("val/acc:max", ("val/acc", "max")),
    ("val/acc:AVG", ("val/acc", "mean")),
    ("val/acc: ArgMax ", ("val/acc", "argmax")),
    ("val/acc:at=0500", ("val/acc", "at=500")),
    ("val/acc:at=-3", ("val/acc", "at=-3")),
    ("val/acc:mean_last=05", ("val/acc", "mean_last=5")),
    ("val/acc:p90", ("val/acc", "p90")),
    ("val/acc:P90.0", ("val/acc", "p90")),
    ("val/acc:p99.90", ("val/acc", "p99.9")),
    ("val/acc:p0", ("val/acc", "p0")),
    ("val/acc:p100", ("val/acc", "p100")),
    ("val/acc:median", ("val/acc", "p50")),
    ("eval:acc:p90", ("eval:acc", "p90")),
    ("x::at=1", ("x:", "at=1")),
    ("lr=3:max", ("lr=3", "max")),
]


@pytest.mark.parametrize(("written", "spec"), SPEC_FORMS, ids=[f[0] for f in SPEC_FORMS])
def test_specs_parse_to_their_canonical_form(written: str, spec: tuple[str, str]) -> None:
    """Verify that a spec splits at its last colon, and its aggregate is written canonically
    (lower case, aliases resolved, numbers normalised), the same in every input form."""
    assert parse_metric_specs([written]) == [spec]
    key, agg = written.rsplit(":", 1)
    assert parse_metric_specs({key: agg}) == [spec]
    assert parse_metric_specs([(key, agg)]) == [spec]
    assert parse_metric_specs([":".join(spec)]) == [spec]  # the canonical form parses to itself


def test_the_same_spec_twice_is_one_column() -> None:
    """Verify that specs naming the same aggregate (median and p50) give one column."""
    specs = parse_metric_specs(["val/acc:median", "val/acc:p50", "val/acc:max", "val/acc:MAX"])
    assert specs == [("val/acc", "p50"), ("val/acc", "max")]


BAD_AGGREGATES = [
    # (spec, ConfigurationError message, as a regex)
    ("val/acc:maxx", r"^no aggregate 'maxx'; did you mean 'max' or 'argmax'\?$"),
    ("val/acc:medain", r"^no aggregate 'medain'; did you mean 'median' or 'mean'"),
    ("val/acc:avgg", r"^no aggregate 'avgg'; did you mean 'avg'\?$"),
    ("val/acc:argmx", r"did you mean 'argmax'"),
    ("val/acc:last5", r"the mean of the last 5 values is 'mean_last=5'"),
    ("val/acc:percentile", r"a percentile is 'pQ', such as 'p90'"),
    ("val/acc:p101", r"percentile 'p101' in metric spec 'val/acc:p101' is above 100"),
    ("val/acc:p", r"^no aggregate 'p'"),
    ("val/acc:p-5", r"^no aggregate 'p-5'"),
    ("val/acc:at", r"aggregate 'at' in metric spec 'val/acc:at' needs a number after '='"),
    ("val/acc:at=1.5", r"at='1.5' in metric spec 'val/acc:at=1.5' is not allowed; expected at=N"),
    ("val/acc:at=", r"at='' in metric spec"),
    ("val/acc:at=99999999999999999999", r"at='99999999999999999999'"),
    ("val/acc:mean_last=0", r"mean_last='0' .* expected mean_last=N with N how many .* \(>= 1\)"),
    ("val/acc:mean_last", r"needs a number after '=', such as 'mean_last=5'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_AGGREGATES, ids=[b[0] for b in BAD_AGGREGATES])
def test_unknown_or_malformed_aggregates_name_the_fix(spec: str, message: str) -> None:
    """Verify that an unknown aggregate raises ConfigurationError with the close names, and a
    malformed argument says what is expected, in metrics and in order_by."""
    with pytest.raises(ConfigurationError, match=message):
        parse_metric_specs([spec])
    with pytest.raises(ConfigurationError, match=message.lstrip("^")) as caught:
        parse_order("-" + spec)
    assert str(caught.value).startswith(f"order_by {'-' + spec!r}")


NEW_AGGREGATES = ["argmax", "argmin", "at=7", "mean_last=3", "p90", "p0"]


@pytest.mark.parametrize("key", ["val/acc", "epoch", "in-extra"])
@pytest.mark.parametrize("agg", NEW_AGGREGATES)
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_new_aggregates_bind_their_params_in_order(dialect: Dialect, agg: str, key: str) -> None:
    """Verify that each new aggregate, of a column or of a key in metrics.extra, shown and
    sorted by, has as many params as placeholders, the key and numbers bound, never inlined."""
    query = build(dialect, [f"{key}:{agg}"], f"-{key}:{agg}", experiment=(3,))
    assert query.sql.count("?") == len(query.params)
    assert query.params[:2] == ["STALE", 3]
    number = agg.partition("=")[2] or None
    if number is not None:
        assert int(number) in query.params and f"={number}" not in query.sql
    if key == "in-extra":
        # bound as the dialect addresses a top-level key (SQLite: the quoted path '$."k"')
        assert dialect.extra_key("in-extra") in query.params and "in-extra" not in query.sql
    # a value of a key in extra is JSON: sorted by a hidden number; the others are numbers
    assert ("AS o0" in query.sql) is (key == "in-extra" and agg.startswith("at="))
    value_family = COLUMNS[key][1] if key in COLUMNS else "extra"
    family = {"argmax": "int", "argmin": "int", "at=7": value_family}.get(agg, "float")
    assert query.families == [family]


def test_sorting_by_a_value_of_a_key_in_extra_adds_a_number() -> None:
    """Verify that at=STEP of a key in metrics.extra, shown as JSON, is sorted by a hidden
    numeric aggregate (as first/last are), not by its JSON text."""
    query = build(SQLiteDialect(), ["in-extra:at=2"], "in-extra:at=2")
    assert "AS o0" in query.sql and query.families == ["extra"]
    assert "ORDER BY (q.o0 IS NULL), q.o0, q.id" in query.sql


# -- unknown metric keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "order", "extra", "message"),
    [
        (["val/accc:max"], None, set(), r"^no metric key 'val/accc'; did you mean 'val/acc'\?$"),
        ([], "-val/accc:p90", set(), r"^no metric key 'val/accc'; did you mean 'val/acc'\?$"),
        (["lrr:max"], None, {"lr"}, r"^no metric key 'lrr'; did you mean 'lr'\?$"),
        (["zzz:max"], None, set(), r"^no metric key 'zzz'; known: 'cfg', 'done', 'epoch'"),
    ],
    ids=["metrics", "order-by", "extra-suggested", "none-close"],
)
def test_unknown_keys_raise_not_found_with_suggestions(
    metrics: list[str], order: str | None, extra: set[str], message: str
) -> None:
    """Verify that a key with no column and no value in metrics.extra raises NotFoundError
    naming the close keys of both, before any SQL is built."""
    with pytest.raises(NotFoundError, match=message):
        build(SQLiteDialect(), metrics, order, extra_keys=extra)


def test_keys_in_extra_or_unchecked_are_not_unknown() -> None:
    """Verify that a key kept only in metrics.extra is read from there, and that without
    extra_keys (None) no key is checked."""
    query = build(SQLiteDialect(), ["lr:max", "val/acc:max"], "lr:p50", extra_keys={"lr"})
    assert '$."lr"' in query.params
    assert build(SQLiteDialect(), ["nope:max"]).params.count('$."nope"') == 3


def test_a_key_nobody_logged_is_unknown_in_an_empty_database() -> None:
    """Verify that with no metric columns and nothing in extra every key is unknown."""
    with pytest.raises(NotFoundError, match=r"^no metric key 'val/acc'; there are none$"):
        build_runs_query(
            SQLiteDialect(),
            specs=parse_metric_specs(["val/acc:max"]),
            order=[],
            columns={},
            stale="STALE",
            extra_keys=set(),
        )


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_extra_keys_sql_binds_every_key(dialect: Dialect) -> None:
    """Verify that the probe of metrics.extra binds each key once and needs one."""
    sql, params = extra_keys_sql(dialect, ["a", "b'; DROP TABLE runs; --"])
    assert sql.count("?") == 2 and params == ["a", "b'; DROP TABLE runs; --"]
    assert "DROP" not in sql
    with pytest.raises(ValueError, match="at least one key"):
        extra_keys_sql(dialect, [])
