"""The SQL of `Tracker.runs`, built without a database: metric specs, sort orders, aggregates.

`build_runs_query` is a pure function of what the caller asked for, the metric columns the
database has and its `Dialect`; `analysis.runs` runs what it returns and makes the frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._columns import Family
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._backends.dialect import Dialect

__all__ = [
    "AGGREGATIONS",
    "ORDER_COLUMNS",
    "TIME_COLUMNS",
    "RunsQuery",
    "aggregate_sql",
    "build_runs_query",
    "check_limit",
    "parse_metric_specs",
    "parse_order",
]

AGGREGATIONS = ("last", "first", "min", "max", "mean", "count")
TIME_COLUMNS = ("created_at", "started_at", "ended_at", "heartbeat_at")


def parse_metric_specs(
    metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None,
) -> list[tuple[str, str]]:
    """Normalise ``{"val/acc": "max"}``, ``[("val/acc", "max")]`` or ``["val/acc:max"]``."""
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
        elif isinstance(item, tuple) and len(item) == 2:
            key, agg = item
        else:
            raise ConfigurationError(f"metric spec {item!r} is neither 'KEY:AGG' nor (key, agg)")
        agg = str(agg).lower()
        if agg == "avg":
            agg = "mean"
        if agg not in AGGREGATIONS:
            raise ConfigurationError(
                f"aggregation {agg!r} for {key!r} is unknown; expected one of {', '.join(AGGREGATIONS)}"
            )
        specs.append((str(key), agg))
    return specs


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


def aggregate_sql(
    dialect: Dialect,
    key: str,
    agg: str,
    column: tuple[str, Family | None] | None,
    *,
    sortable: bool = False,
) -> tuple[str, list[Any], bool, Family | str | None]:
    """Return (SQL expression, its params, whether it is a GROUP BY aggregate, result family).

    `sortable` makes first/last of a key kept in ``metrics.extra`` a number (a value that is
    not one counts as missing): the JSON it is otherwise would sort as text on SQLite.
    """
    if column is None:  # a key without a column: its values live in metrics.extra
        family: Family | str | None = "extra"
        value = "m.extra -> ?"
        params = [key]
        # a step that logged None holds a JSON null there, which ->> reads as SQL NULL
        present, present_params = "m.extra ->> ?", [key]
        numeric, bound = dialect.extra_number_sql()  # NaN and ±inf count, as in a float column
        numeric_params = [key] * bound
    else:
        name, family = column
        value = "m." + dialect.quote(name)
        params = []
        numeric, numeric_params = value, []
        present, present_params = value, []
        if (family == "json" and agg in ("min", "max", "mean")) or (
            family == "text" and agg == "mean"
        ):
            raise ConfigurationError(
                f"aggregation {agg!r} needs a numeric metric; {key!r} holds {family}"
            )
    if agg in ("last", "first"):
        if sortable and family == "extra":
            family, value, params = "float", numeric, numeric_params
        order = "DESC" if agg == "last" else "ASC"
        expr = (
            f"(SELECT {value} FROM metrics m WHERE m.run_id = sel.id "
            f"AND {present} IS NOT NULL ORDER BY m.step {order} LIMIT 1)"
        )
        return expr, params + present_params, False, family
    if agg == "count":
        return f"count({present})", present_params, True, "int"
    if family == "extra":
        family, value, params = "float", numeric, numeric_params
    sql, params, family = dialect.aggregates[agg](value, params, family)
    return sql, params, True, family


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
) -> RunsQuery:
    """The runs query: `specs` shown as ``KEY:AGG`` columns, sorted by `order`, runs of
    `experiment` (``(id,)``, ``(None,)`` for one that does not exist) matching `where`;
    `columns` is key -> (column, family) as ``metric_columns`` records it, `stale` the time
    before which a running run's heartbeat means crashed. Aggregates are computed over the
    whole table when no run is filtered out, as hand-written SQL would."""
    conditions, sel_params = [], [stale]
    if experiment is not None:
        conditions.append("r.experiment_id = ?")
        sel_params.append(experiment[0])
    if where:
        conditions.append(f"({where})")
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
    parts = _Parts()
    for alias, key, agg, sortable in aggregates:
        parts.add(alias, agg, aggregate_sql(dialect, key, agg, columns.get(key), sortable=sortable))
    text = f"WITH sel AS ({sel})"
    if parts.grouped:
        # Every run selected: aggregate the whole table, as hand-written SQL would (a join
        # with sel cost PostgreSQL a sort and merge, SQLite a lookup per row, ~1.7x in all);
        # some: a semi-join, which the planners turn into index seeks or a hash probe. One
        # experiment: a semi-join on runs itself, which has statistics (sel, a CTE, has none).
        if where:
            among = " WHERE m.run_id IN (SELECT id FROM sel)"
        elif experiment is not None:
            among = " WHERE m.run_id IN (SELECT id FROM runs WHERE experiment_id = ?)"
            parts.group_params.append(experiment[0])
        else:
            among = ""
        text += (
            f", g AS (SELECT m.run_id, {', '.join(parts.grouped)} FROM metrics m{among}"
            " GROUP BY m.run_id)"
        )
    text += " SELECT * FROM (SELECT sel.*" + "".join(", " + o for o in parts.outer) + " FROM sel"
    if parts.grouped:
        text += " LEFT JOIN g ON g.run_id = sel.id"
    # ties (and runs without a value) in run id order
    text += " ) q ORDER BY " + ", ".join([*sort_terms, "q.id"])
    limit_params = []
    if limit is not None:
        text += " LIMIT ?"
        limit_params.append(limit)
    params = [*sel_params, *parts.group_params, *parts.outer_params, *limit_params]
    return RunsQuery(text, params, parts.families[: len(specs)])


@dataclass
class _Parts:
    """The aggregates of a runs query, split into those computed in the per-run GROUP BY
    (``g``) and those selected per run (first/last), with their params in order."""

    grouped: list[str] = field(default_factory=list)
    group_params: list[Any] = field(default_factory=list)
    outer: list[str] = field(default_factory=list)
    outer_params: list[Any] = field(default_factory=list)
    families: list[Family | str | None] = field(default_factory=list)

    def add(
        self, alias: str, agg: str, made: tuple[str, list[Any], bool, Family | str | None]
    ) -> None:
        expr, params, is_group, family = made
        self.families.append(family)
        if is_group:
            self.grouped.append(f"{expr} AS {alias}")
            self.group_params.extend(params)
            # a run without metric rows has no row in g: its count is 0, not NULL
            count = agg == "count"
            self.outer.append(f"COALESCE(g.{alias}, 0) AS {alias}" if count else f"g.{alias}")
        else:
            self.outer.append(f"{expr} AS {alias}")
            self.outer_params.extend(params)


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
            if family == "json" and agg in ("first", "last"):
                raise ConfigurationError(
                    f"cannot order runs by {key + ':' + agg!r}: {key!r} holds JSON, which "
                    "each database orders its own way; order by a numeric or text metric"
                )
            # first/last of a key in metrics.extra are JSON: sort by a number of their own
            shown = family != "extra" or agg not in ("first", "last")
            alias = f"a{specs.index(field_)}" if shown and field_ in specs else ""
            if not alias:
                alias = f"o{len(aggregates) - len(specs)}"
                aggregates.append((alias, key, agg, True))
        # NULLs last both ways (PostgreSQL puts them first in DESC; SQLite first in ASC)
        sort_terms += [f"(q.{alias} IS NULL)", f"q.{alias}" + (" DESC" if descending else "")]
    return aggregates, sort_terms
