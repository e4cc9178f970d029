"""Per-run aggregates of one metric: the AGG of a spec ``KEY:AGG``, parsed and turned into SQL.

The grammar, the meaning of each aggregate and the NaN rule are documented once, in
`sqltrack_core._runs_query`'s docstring; this module implements them. Every aggregate is SQL
that both dialects run (the dialect's registry supplies ``min``, ``max`` and ``mean``, which
differ); the percentile is window functions in SQL on both, never Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._columns import Family
from ._suggest import did_you_mean
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._backends.dialect import Dialect

__all__ = [
    "AGGREGATIONS",
    "VALUE_AGGREGATES",
    "Aggregate",
    "Placement",
    "aggregate_sql",
    "canonical",
    "split",
]

#: Every aggregate as a user writes it (STEP, K and Q stand for numbers), for help and hints
AGGREGATIONS = (
    "last",
    "first",
    "min",
    "max",
    "mean",
    "avg",
    "count",
    "argmin",
    "argmax",
    "at=STEP",
    "mean_last=K",
    "pQ",
    "median",
)
#: Aggregates that return a logged value as it is (JSON included), not a number made from it
VALUE_AGGREGATES = ("last", "first", "at")

_PLAIN = ("last", "first", "min", "max", "mean", "count", "argmin", "argmax")
_ALIASES = {"avg": "mean", "median": "p50"}
_PERCENTILE = re.compile(r"p(\d{1,3}(?:\.\d+)?)")
_INTEGER = re.compile(r"[+-]?\d+")
_INT64 = 2**63
#: what users write by habit from other tools -> what we call it
_HABITS = [
    (re.compile(r"(?:mean_?)?last_?(\d+)"), "the mean of the last {0} values is 'mean_last={0}'"),
    (re.compile(r"(?:percentile|quantile|pct)"), "a percentile is 'pQ', such as 'p90' or 'p99.9'"),
]


def canonical(agg: str, spec: object) -> str:
    """Return the canonical spelling of the aggregate `agg` (``"AVG"`` -> ``"mean"``,
    ``"at=0500"`` -> ``"at=500"``, ``"median"`` -> ``"p50"``), or raise ConfigurationError
    naming `spec` (the whole spec as the user wrote it) with a suggestion."""
    text = agg.strip().lower()
    text = _ALIASES.get(text, text)
    if text in _PLAIN:
        return text
    name, sep, arg = text.partition("=")
    if sep and name == "at":
        return f"at={_integer(arg, spec, 'at', 'a step number, such as at=500', low=-_INT64)}"
    if sep and name == "mean_last":
        what = "how many of the last values to average (>= 1), such as mean_last=5"
        return f"mean_last={_integer(arg, spec, 'mean_last', what, low=1)}"
    found = _PERCENTILE.fullmatch(text)
    if found:
        percent = Decimal(found.group(1))
        if percent <= 100:
            return "p" + format(percent.normalize(), "f")
        raise ConfigurationError(
            f"percentile {agg!r} in metric spec {spec!r} is above 100; expected p0 to p100, "
            "such as 'p90' or 'p99.9'"
        )
    if name in ("at", "mean_last"):
        example = "at=500" if name == "at" else "mean_last=5"
        raise ConfigurationError(
            f"aggregate {agg!r} in metric spec {spec!r} needs a number after '=', such as "
            f"{example!r}"
        )
    raise ConfigurationError(f"{did_you_mean(agg, AGGREGATIONS, what='aggregate')}{_hint(text)}")


def _hint(text: str) -> str:
    for pattern, hint in _HABITS:
        found = pattern.fullmatch(text)
        if found:
            return f" ({hint.format(*found.groups())})"
    return ""


def _integer(arg: str, spec: object, name: str, what: str, *, low: int) -> int:
    if _INTEGER.fullmatch(arg) and low <= int(arg) < _INT64:
        return int(arg)
    raise ConfigurationError(
        f"{name}={arg!r} in metric spec {spec!r} is not allowed; expected {name}=N with N {what}"
    )


def split(agg: str) -> tuple[str, int | float | None]:
    """A canonical aggregate -> (its kind, its number): ``"at=500"`` -> ``("at", 500)``,
    ``"p90"`` -> ``("percentile", 0.9)``, ``"max"`` -> ``("max", None)``."""
    name, sep, arg = agg.partition("=")
    if sep:
        return name, int(arg)
    if agg not in _PLAIN:
        return "percentile", float(Decimal(agg[1:]) / 100)
    return agg, None


@dataclass(frozen=True)
class _Source:
    """How one key's values are read in a row ``m`` of ``metrics``: `value` as stored (JSON
    for a key in ``extra``), `number` as a number (a key in ``extra``: NaN and ±inf included,
    other JSON as NULL), `present` NULL where the step has no value; each with its params."""

    value: str
    value_params: list[Any]
    number: str
    number_params: list[Any]
    present: str
    present_params: list[Any]
    family: Family | str | None

    @property
    def numeric_family(self) -> Family | str | None:
        return "float" if self.family == "extra" else self.family


def _source(dialect: Dialect, key: str, column: tuple[str, Family | None] | None) -> _Source:
    if column is None:  # a key without a column: its values live in metrics.extra
        number, bound = dialect.extra_number_sql()  # NaN and ±inf count, as in a float column
        # a step that logged None holds a JSON null there, which ->> reads as SQL NULL
        path = dialect.extra_key(key)
        return _Source(
            "m.extra -> ?", [path], number, [path] * bound, "m.extra ->> ?", [path], "extra"
        )
    name, family = column
    value = "m." + dialect.quote(name)
    return _Source(value, [], value, [], value, [], family)


#: kind of aggregate -> the column families it refuses, and what it needs instead
_NEEDS = {
    "mean": (("json", "text"), "a numeric or bool metric"),
    "mean_last": (("json", "text"), "a numeric or bool metric"),
    "percentile": (("json", "text", "bool"), "a numeric (int or float) metric"),
    "min": (("json",), "a metric that is not JSON"),
    "max": (("json",), "a metric that is not JSON"),
    "argmin": (("json",), "a metric that is not JSON"),
    "argmax": (("json",), "a metric that is not JSON"),
}


#: where an aggregate is computed: in the per-run GROUP BY (``g``), as a subquery per run
#: (``sel.id`` names the run), or in a table of its own, (run_id, v), joined to the runs
Placement = Literal["group", "run", "table"]


class Aggregate(NamedTuple):
    """The SQL of one aggregate: an expression (group, run) or a SELECT of ``(run_id, v)``
    (table), its params in order, where it goes, and the family of its value."""

    sql: str
    params: list[Any]
    placement: Placement
    family: Family | str | None


def aggregate_sql(
    dialect: Dialect,
    key: str,
    agg: str,
    column: tuple[str, Family | None] | None,
    *,
    sortable: bool = False,
    among: tuple[str, list[Any]] = ("", []),
) -> Aggregate:
    """The SQL of the canonical aggregate `agg` of `key` (`column`: its column and family, or
    None for a key kept in ``metrics.extra``).

    `sortable` makes a value aggregate (first, last, at) of a key kept in ``metrics.extra`` a
    number (a value that is not one counts as missing): the JSON it is otherwise would sort as
    text on SQLite. `among` is a condition on ``m.run_id`` (and its params) that a table
    aggregate applies to the rows it reads; empty for all of them.
    """
    kind, arg = split(agg)
    src = _source(dialect, key, column)
    refused, needed = _NEEDS.get(kind, ((), ""))
    if src.family in refused:
        raise ConfigurationError(f"aggregation {agg!r} needs {needed}; {key!r} holds {src.family}")
    if kind in VALUE_AGGREGATES:
        sql, params = _pick(src, kind, arg, sortable=sortable)
        return Aggregate(sql, params, "run", _picked_family(src, sortable))
    if kind == "count":
        return Aggregate(f"count({src.present})", src.present_params, "group", "int")
    if kind in ("min", "max", "mean"):
        sql, params, family = dialect.aggregates[kind](
            src.number, src.number_params, src.numeric_family
        )
        return Aggregate(sql, params, "group", family)
    if kind in ("argmin", "argmax"):
        sql, params = _arg_best(src, among, descending=kind == "argmax")
        return Aggregate(sql, params, "table", "int")
    if kind == "mean_last":
        assert isinstance(arg, int)
        return Aggregate(*_mean_last(dialect, src, arg), "run", "float")
    assert isinstance(arg, float)
    return Aggregate(*_percentile(src, arg), "run", "float")


def _picked_family(src: _Source, sortable: bool) -> Family | str | None:
    return "float" if sortable and src.family == "extra" else src.family


def _pick(
    src: _Source, kind: str, arg: int | float | None, *, sortable: bool
) -> tuple[str, list[Any]]:
    """The value at the last, the first, or a given step that has one."""
    value, params = src.value, src.value_params
    if sortable and src.family == "extra":
        value, params = src.number, src.number_params
    if kind == "at":
        step, step_params, order = "m.step = ? AND ", [arg], ""
    else:
        step, step_params = "", []
        order = f" ORDER BY m.step {'DESC' if kind == 'last' else 'ASC'} LIMIT 1"
    expr = (
        f"(SELECT {value} FROM metrics m WHERE m.run_id = sel.id AND {step}"
        f"{src.present} IS NOT NULL{order})"
    )
    return expr, [*params, *step_params, *src.present_params]


def _values(number: str) -> str:
    """The run's steps that have a value of the key, as ``s(v, step)``, `v` the SQL `number`
    (a key's number, see `_Source`). The databases order NaN above +inf (SQLite keeps it as
    the text 'NaN', which sorts after every number), so no aggregate needs a NaN case to order."""
    return (
        f"(SELECT {number} AS v, m.step FROM metrics m WHERE m.run_id = sel.id) s "
        "WHERE s.v IS NOT NULL"
    )


def _arg_best(
    src: _Source, among: tuple[str, list[Any]], *, descending: bool
) -> tuple[str, list[Any]]:
    """(run_id, the step of its largest or smallest value; of equal values, the earliest).

    One pass over the rows, ranked per run, rather than a subquery per run: PostgreSQL took
    ~3x DISTINCT ON's time with an index scan and a sort per run, SQLite ~1.5x a window."""
    order = "DESC" if descending else "ASC"
    condition, params = among
    ranked = (
        "SELECT s.run_id, s.step, row_number() OVER (PARTITION BY s.run_id "
        f"ORDER BY s.v {order}, s.step) AS rn FROM (SELECT m.run_id, m.step, {src.number} AS v "
        f"FROM metrics m{' WHERE ' + condition if condition else ''}) s WHERE s.v IS NOT NULL"
    )
    return f"SELECT t.run_id, t.step AS v FROM ({ranked}) t WHERE t.rn = 1", [
        *src.number_params,
        *params,
    ]


def _mean_last(dialect: Dialect, src: _Source, count: int) -> tuple[str, list[Any]]:
    """The dialect's mean (NaN if a NaN is among them) of the values at the last `count`
    steps that have one."""
    mean, mean_params, _ = dialect.aggregates["mean"]("t.v", [], src.numeric_family)
    last = f"SELECT s.v FROM {_values(src.number)} ORDER BY s.step DESC LIMIT ?"
    return f"(SELECT {mean} FROM ({last}) t)", [*mean_params, *src.number_params, count]


def _percentile(src: _Source, fraction: float) -> tuple[str, list[Any]]:
    """The run's percentile as PostgreSQL's percentile_cont computes it, in window functions
    (SQLite has none): rank ``pos = fraction * (n - 1)`` of its n values in order (0-based,
    NaN last), ``lo`` and ``hi`` the values at ranks floor(pos) and floor(pos) + 1, then
    ``lo`` if pos is whole, else ``lo + (pos - floor(pos)) * (hi - lo)``, in float."""
    number = src.number
    if src.family == "int":  # percentile_cont reads ints as float8 (no bigint overflow)
        number = f"CAST({number} AS DOUBLE PRECISION)"
    ranked = (
        "SELECT s.v, row_number() OVER (ORDER BY s.v) - 1 AS i, "
        f"(count(*) OVER () - 1) * ? AS pos FROM {_values(number)}"
    )
    at_or_below = "w.i <= w.pos AND w.i > w.pos - 1"
    bounds = (
        f"SELECT max(CASE WHEN {at_or_below} THEN w.v END) AS lo, "
        "max(CASE WHEN w.i > w.pos AND w.i < w.pos + 1 THEN w.v END) AS hi, "
        f"max(w.pos) - max(CASE WHEN {at_or_below} THEN w.i END) AS frac FROM ({ranked}) w"
    )
    mix = "b.lo + b.frac * (b.hi - b.lo)"
    if src.numeric_family == "float":
        # SQLite keeps NaN as text, which arithmetic reads as 0, and returns the NaN of
        # inf - inf as NULL: both made NaN, as PostgreSQL's float arithmetic gives
        mix = f"CASE WHEN b.lo = 'NaN' OR b.hi = 'NaN' THEN 'NaN' ELSE COALESCE({mix}, 'NaN') END"
    expr = (
        "(SELECT CASE WHEN b.lo IS NULL THEN NULL WHEN b.frac = 0 THEN b.lo "
        f"ELSE {mix} END FROM ({bounds}) b)"
    )
    return expr, [fraction, *src.number_params]
