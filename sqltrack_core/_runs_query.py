"""The SQL of `Tracker.runs`, built without a database: metric specs, sort orders, aggregates.

`build_runs_query` is a pure function of what the caller asked for, the metric columns the
database has and its `Dialect`; `analysis.runs` runs what it returns and makes the frame.

Metric specs (the one reference: `Tracker.runs`, ``sqltrack runs -m`` and views use them)
-------------------------------------------------------------------------------------
A spec asks for one aggregate of one metric key per run: the string ``KEY:AGG``, split at its
LAST colon (no aggregate contains one, so a key may: ``"eval:acc:max"`` is key ``eval:acc``),
or the pair ``(KEY, AGG)`` / mapping ``{KEY: AGG}``, never split. ``AGG`` ignores case; the
column is named ``KEY:AGG`` with ``AGG`` written canonically (second column), and a spec sorts
in ``order_by`` as it is (``"-val/acc:p90"``)::

    AGG          canonical     per run
    last, first  last, first   the value at the highest / lowest step that has one
    min, max     min, max      the smallest / largest value (bool: all / any)
    mean, avg    mean          the arithmetic mean (bool: the fraction that is true)
    count        count         how many steps have a value (0 for a run without any)
    argmin       argmin        the step of the smallest / largest value; equal values:
    argmax       argmax        the earliest step
    at=STEP      at=500        the value at step STEP, an integer (missing if that step
                               has none)
    mean_last=K  mean_last=5   the mean of the values at the last K steps that have one
                               (K >= 1; the mean of all of them if there are fewer)
    pQ           p90, p99.9    the Q-th percentile, 0 <= Q <= 100, as PostgreSQL's
    median       p50           percentile_cont computes it: of the n values in order
                               (NaN last), lo and hi at ranks floor(r) and floor(r) + 1
                               (from 0), r = Q/100 * (n - 1); lo if r is whole, else
                               lo + (r - floor(r)) * (hi - lo), in float (interpolated
                               linearly: numpy's default agrees on finite values)

What can be aggregated: last, first, at and count take any metric; min, max, argmin and
argmax any but JSON; mean and mean_last numbers and bools; a percentile numbers only. A key
kept in ``metrics.extra`` (over the column budget) is read as a number where one is needed,
other JSON counting as missing.

Missing values: a step that did not log the key, or logged None, has no value; aggregates
skip it, and an aggregate of no values is missing (None, or NaN in a float column), except
count, which is 0. A key that no run has logged is an error (`NotFoundError`).

NaN and ±inf, one rule on both databases (PostgreSQL's): NaN is a value, and it orders above
+inf. So max and p100 are NaN if any value is, argmax is the first NaN's step; min, p0 and
argmin skip NaN unless every value is NaN; mean and mean_last are NaN if a value they average
is; last, first and at return a NaN that was logged; count counts it; ``order_by`` puts NaN
above every number. ±inf are numbers, in IEEE arithmetic: the mean of +inf and -inf is NaN;
a percentile that falls between two values (r not whole) is NaN if either is NaN or lo is
infinite (-inf and 1, -inf and +inf, +inf and +inf), and +inf between a number and +inf.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._aggregates import (
    AGGREGATIONS,
    VALUE_AGGREGATES,
    Aggregate,
    aggregate_sql,
    canonical,
    split,
)
from ._backends.json_keys import object_keys_sql
from ._columns import Family
from ._suggest import did_you_mean
from .errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from ._backends import Backend
    from ._backends.dialect import Dialect

__all__ = [
    "AGGREGATIONS",
    "ORDER_COLUMNS",
    "TIME_COLUMNS",
    "RunsQuery",
    "aggregate_sql",
    "build_runs_query",
    "check_keys",
    "check_limit",
    "extra_keys",
    "extra_keys_sql",
    "parse_metric_specs",
    "parse_order",
]

TIME_COLUMNS = ("created_at", "started_at", "ended_at", "heartbeat_at")


def parse_metric_specs(
    metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None,
) -> list[tuple[str, str]]:
    """Normalise ``{"val/acc": "max"}``, ``[("val/acc", "max")]`` or ``["val/acc:max"]`` to
    (key, canonical aggregate) pairs; see the module docstring for the grammar."""
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    items: Iterable[Any] = metrics.items() if isinstance(metrics, Mapping) else metrics
    specs = []
    for item in items:
        if isinstance(item, str):
            key, sep, agg = item.rpartition(":")
            if not sep or not key:
                raise ConfigurationError(
                    f"metric spec {item!r} needs the form KEY:AGG, e.g. 'val/acc:max'"
                )
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
            key, agg = item
        else:
            raise ConfigurationError(f"metric spec {item!r} is neither 'KEY:AGG' nor (key, agg)")
        specs.append((str(key), canonical(agg, item)))
    return list(dict.fromkeys(specs))  # one column per spec (median and p50 are one)


#: The columns of `runs` that ``order_by`` takes by name (any metric spec works too)
ORDER_COLUMNS = (
    "id",
    "uuid",
    "experiment",
    "name",
    "status",
    "created_at",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "owner",
    "comment",
)


def parse_order(order_by: str | Sequence[str] | None) -> list[tuple[str | tuple[str, str], bool]]:
    """Normalise ``"-val/acc:max"`` or ``["status", "-started_at"]`` to (column or spec, descending).

    A leading ``-`` means descending; the rest is one of `ORDER_COLUMNS` or a metric spec
    ``KEY:AGG``. Nothing else is accepted, so no user text reaches the SQL as an identifier.
    """
    if order_by is None:
        return []
    items: Sequence[Any] = [order_by] if isinstance(order_by, str) else order_by
    if not isinstance(items, Sequence):
        raise ConfigurationError(
            f"order_by {order_by!r} has type {type(order_by).__name__}; expected a str such as "
            "'-val/acc:max' or a list of them"
        )
    order: list[tuple[str | tuple[str, str], bool]] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(
                f"order_by item {item!r} has type {type(item).__name__}; expected a str such as "
                "'started_at' or '-val/acc:max'"
            )
        descending = item.startswith("-")
        field = item[1:] if descending else item
        if field in ORDER_COLUMNS:
            order.append((field, descending))
        elif ":" in field:
            try:
                [spec] = parse_metric_specs([field])
            except ConfigurationError as exc:
                raise ConfigurationError(f"order_by {item!r}: {exc}") from None
            order.append((spec, descending))
        else:
            raise ConfigurationError(
                f"order_by {item!r} is neither a run column ({', '.join(ORDER_COLUMNS)}) nor "
                "a metric spec KEY:AGG such as 'val/acc:max'; a leading '-' sorts descending"
            )
    return order


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(
            f"limit {limit!r} must be an int >= 0 (the number of runs), or None for all of them"
        )


@dataclass
class RunsQuery:
    """What `build_runs_query` returns: the statement (``?`` placeholders), its params, and the
    family of each shown aggregate (the last ``len(families)`` columns), for decoding."""

    sql: str
    params: list[Any]
    families: list[Family | str | None] = field(default_factory=list)


def build_runs_query(
    dialect: Dialect,
    *,
    specs: list[tuple[str, str]],
    order: list[tuple[str | tuple[str, str], bool]],
    columns: Mapping[str, tuple[str, Family | None]],
    stale: Any,
    experiment: tuple[int | None] | None = None,
    where: str | None = None,
    args: Sequence[Any] = (),
    limit: int | None = None,
    extra_keys: Collection[str] | None = None,
) -> RunsQuery:
    """The runs query: `specs` shown as ``KEY:AGG`` columns, sorted by `order`, runs of
    `experiment` (``(id,)``, ``(None,)`` for one that does not exist) matching `where`;
    `columns` is key -> (column, family) as ``metric_columns`` records it, `stale` the time
    before which a running run's heartbeat means crashed. Aggregates are computed over the
    whole table when no run is filtered out, as hand-written SQL would.

    `extra_keys` are keys known to be in ``metrics.extra`` (see `extra_keys`): a key of a spec
    that has no column and is not among them raises NotFoundError, naming the close known
    keys. None skips that check (every key without a column is then read from ``extra``).
    """
    if extra_keys is not None:
        check_keys(specs, order, columns, extra_keys)
    conditions, sel_params = [], [stale]
    if experiment is not None:
        conditions.append("r.experiment_id = ?")
        sel_params.append(experiment[0])
    if where:
        # on runs alone, so that a bare column name is the run's (``name LIKE ?`` is not
        # ambiguous with the joined experiment's name)
        conditions.append(f"r.id IN (SELECT r.id FROM runs r WHERE ({where}))")
        sel_params.extend(args)
    sel = (
        "SELECT r.id, r.uuid, e.name AS experiment, r.name, "
        "CASE WHEN r.status = 'running' AND COALESCE(r.heartbeat_at, r.started_at, r.created_at) < ? "
        "THEN 'crashed' ELSE r.status END AS status, "
        + "".join(f"{dialect.epoch_sql('r.' + c)} AS {c}, " for c in TIME_COLUMNS)
        + "r.owner, r.tags, r.comment, r.params "
        "FROM runs r JOIN experiments e ON e.id = r.experiment_id"
        + (" WHERE " + " AND ".join(conditions) if conditions else "")
    )
    aggregates, sort_terms = _sorting(specs, order, columns)
    # Every run selected: aggregate the whole table, as hand-written SQL would (a join with
    # sel cost PostgreSQL a sort and merge, SQLite a lookup per row, ~1.7x in all); some: a
    # semi-join, which the planners turn into index seeks or a hash probe. One experiment: a
    # semi-join on runs itself, which has statistics (sel, a CTE, has none).
    among: tuple[str, list[Any]] = ("", [])
    if where:
        among = ("m.run_id IN (SELECT id FROM sel)", [])
    elif experiment is not None:
        among = ("m.run_id IN (SELECT id FROM runs WHERE experiment_id = ?)", [experiment[0]])
    parts = _Parts()
    for alias, key, agg, sortable in aggregates:
        made = aggregate_sql(dialect, key, agg, columns.get(key), sortable=sortable, among=among)
        parts.add(alias, agg, made)
    text = f"WITH sel AS ({sel})"
    if parts.grouped:
        condition, among_params = among
        text += (
            f", g AS (SELECT m.run_id, {', '.join(parts.grouped)} FROM metrics m"
            f"{' WHERE ' + condition if condition else ''} GROUP BY m.run_id)"
        )
        parts.group_params.extend(among_params)
    text += "".join(f", t_{alias} AS ({table})" for alias, table in parts.tables)
    text += " SELECT * FROM (SELECT sel.*" + "".join(", " + o for o in parts.outer) + " FROM sel"
    if parts.grouped:
        text += " LEFT JOIN g ON g.run_id = sel.id"
    text += "".join(f" LEFT JOIN t_{a} ON t_{a}.run_id = sel.id" for a, _ in parts.tables)
    # ties (and runs without a value) in run id order
    text += " ) q ORDER BY " + ", ".join([*sort_terms, "q.id"])
    limit_params = []
    if limit is not None:
        text += " LIMIT ?"
        limit_params.append(limit)
    params = [
        *sel_params,
        *parts.group_params,
        *parts.table_params,
        *parts.outer_params,
        *limit_params,
    ]
    return RunsQuery(text, params, parts.families[: len(specs)])


@dataclass
class _Parts:
    """The aggregates of a runs query by placement: in the per-run GROUP BY (``g``), in tables
    of their own (``t_<alias>``), or selected per run (first, last, at, ...), with their
    params in the order of the statement."""

    grouped: list[str] = field(default_factory=list)
    group_params: list[Any] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)
    table_params: list[Any] = field(default_factory=list)
    outer: list[str] = field(default_factory=list)
    outer_params: list[Any] = field(default_factory=list)
    families: list[Family | str | None] = field(default_factory=list)

    def add(self, alias: str, agg: str, made: Aggregate) -> None:
        self.families.append(made.family)
        if made.placement == "group":
            self.grouped.append(f"{made.sql} AS {alias}")
            self.group_params.extend(made.params)
            # a run without metric rows has no row in g: its count is 0, not NULL
            count = agg == "count"
            self.outer.append(f"COALESCE(g.{alias}, 0) AS {alias}" if count else f"g.{alias}")
        elif made.placement == "table":
            self.tables.append((alias, made.sql))
            self.table_params.extend(made.params)
            self.outer.append(f"t_{alias}.v AS {alias}")
        else:
            self.outer.append(f"{made.sql} AS {alias}")
            self.outer_params.extend(made.params)


def _sorting(
    specs: list[tuple[str, str]],
    order: list[tuple[str | tuple[str, str], bool]],
    columns: Mapping[str, tuple[str, Family | None]],
) -> tuple[list[tuple[str, str, str, bool]], list[str]]:
    """The aggregates to compute, (alias, key, agg, sortable): those shown (a0, a1, ...), then
    those only sorted by (o0, o1, ...); and the ORDER BY terms."""
    aggregates = [(f"a{i}", key, agg, False) for i, (key, agg) in enumerate(specs)]
    sort_terms = []
    for field_, descending in order:
        if isinstance(field_, str):
            alias = field_
        else:
            key, agg = field_
            column = columns.get(key)
            family: Family | str | None = "extra" if column is None else column[1]
            picks = split(agg)[0] in VALUE_AGGREGATES  # the logged value itself
            if family == "json" and picks:
                raise ConfigurationError(
                    f"cannot order runs by {key + ':' + agg!r}: {key!r} holds JSON, which "
                    "each database orders its own way; order by a numeric or text metric"
                )
            # first/last/at of a key in metrics.extra are JSON: sort by a number of their own
            shown = family != "extra" or not picks
            alias = f"a{specs.index(field_)}" if shown and field_ in specs else ""
            if not alias:
                alias = f"o{len(aggregates) - len(specs)}"
                aggregates.append((alias, key, agg, True))
        # NULLs last both ways (PostgreSQL puts them first in DESC; SQLite first in ASC)
        sort_terms += [f"(q.{alias} IS NULL)", f"q.{alias}" + (" DESC" if descending else "")]
    return aggregates, sort_terms


def _asked_keys(
    specs: list[tuple[str, str]], order: list[tuple[str | tuple[str, str], bool]]
) -> list[str]:
    """The metric keys of `specs` and of the specs in `order`, once each, in order."""
    keys = [key for key, _ in specs] + [f[0] for f, _ in order if isinstance(f, tuple)]
    return list(dict.fromkeys(keys))


def check_keys(
    specs: list[tuple[str, str]],
    order: list[tuple[str | tuple[str, str], bool]],
    columns: Mapping[str, tuple[str, Family | None]],
    extra_keys: Collection[str],
) -> None:
    """Raise NotFoundError for the first key asked for that has no column and is not one of
    `extra_keys`, with the close ones among both as suggestions."""
    for key in _asked_keys(specs, order):
        if key not in columns and key not in extra_keys:
            raise NotFoundError(did_you_mean(key, [*columns, *extra_keys], what="metric key"))


#: how many rows holding ``metrics.extra`` are read for suggestions when a key is unknown
EXTRA_SAMPLE_ROWS = 1000


def extra_keys_sql(dialect: Dialect, keys: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL (and params) returning the ``k`` of `keys` (at least one) that some row of
    ``metrics`` holds in ``extra``: a value, or a JSON null for a step that logged None. Keys
    are compared whole (``->`` would read ``a.b`` as a path on SQLite)."""
    if not keys:
        raise ValueError("extra_keys_sql needs at least one key")
    union = " UNION ALL ".join("SELECT ? AS k" for _ in keys)
    each = object_keys_sql(dialect, "m.extra", "j")
    sql = (
        f"SELECT w.k FROM ({union}) w WHERE EXISTS "
        f"(SELECT 1 FROM metrics m, {each} WHERE m.extra IS NOT NULL AND j.key = w.k)"
    )
    return sql, list(keys)


def extra_keys(
    backend: Backend,
    specs: list[tuple[str, str]],
    order: list[tuple[str | tuple[str, str], bool]],
    columns: Mapping[str, tuple[str, Family | None]],
) -> set[str]:
    """The keys asked for without a column that ``metrics.extra`` holds, for `build_runs_query`'s
    `extra_keys`. No query when every key has a column. When some key is in neither, the keys
    of the first `EXTRA_SAMPLE_ROWS` rows holding ``extra`` are added, so that the error can
    suggest them (an exact list would read the whole table)."""
    wanted = [key for key in _asked_keys(specs, order) if key not in columns]
    if not wanted:
        return set()
    sql, params = extra_keys_sql(backend.dialect, wanted)
    _, rows = backend.fetchall(backend.sql(sql), params)
    found = {row[0] for row in rows}
    if len(found) < len(wanted):
        _, sample = backend.fetchall(
            backend.sql("SELECT extra FROM metrics WHERE extra IS NOT NULL LIMIT ?"),
            [EXTRA_SAMPLE_ROWS],
        )
        for (extra,) in sample:
            found.update(backend.dialect.decode_json(extra) or {})
    return found
