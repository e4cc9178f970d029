"""The SQL of metric histories as pure functions: which steps (`Window`) and columns -> queries.

Steps are chosen in SQL, in this order, per run: those in the step range that have a value of
one of the asked keys, then every N-th of them (by position), then the first and last ones.
The first/last steps without `every` are one ``ORDER BY step LIMIT n`` per run and end, which
walks the ``(run_id, step)`` primary key from that end and stops (a window function would
number the run's whole history first); with `every`, window functions number the steps.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._backends.dialect import Dialect
from ._backends.json_keys import object_members_sql
from ._checks import MAX_INT64, MIN_INT64
from .errors import ConfigurationError

__all__ = ["Query", "Selection", "Window", "count_query", "history_queries", "parse_window"]

#: runs per statement when each has LIMIT branches of its own (SQLite allows 500 per compound)
BRANCH_RUNS = 100
_STEPS_FORM = "'A:B' (either end may be left out: '100:200', ':500', '1000:') or 'A'"


@dataclass(frozen=True)
class Window:
    """Which steps of each run: `first`..`last` (inclusive; None: open), every `every`-th of
    those, then the first `head` and last `tail` of what is left (None: no cut)."""

    head: int | None = None
    tail: int | None = None
    first: int | None = None
    last: int | None = None
    every: int | None = None

    @property
    def cut(self) -> bool:
        return self.head is not None or self.tail is not None


@dataclass(frozen=True)
class Selection:
    """What to read: the runs, the metric columns (quoted), and the keys a step must have a
    value of (`filter_columns` quoted, `filter_keys` as they may appear in ``extra``)."""

    ids: tuple[int, ...]
    columns: tuple[str, ...]
    filter_columns: tuple[str, ...] = ()
    filter_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    sql: str
    params: list[Any]


def _count(name: str, value: Any, *, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, str, bytes, float)):
        raise ConfigurationError(f"{name} {value!r} is a {type(value).__name__}; expected an int")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigurationError(
            f"{name} {value!r} is a {type(value).__name__}; expected an int"
        ) from None
    if not least <= number <= MAX_INT64:
        raise ConfigurationError(f"{name} {value!r} is out of range; expected an int >= {least}")
    return number


def _step(value: Any, steps: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            raise ConfigurationError(
                f"steps {steps!r} is not a step range; expected {_STEPS_FORM}"
            ) from None
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ConfigurationError(
            f"steps {steps!r} has an end {value!r} that is a {type(value).__name__}; "
            "expected an int or None"
        )
    number = operator.index(value)
    if not MIN_INT64 <= number <= MAX_INT64:
        raise ConfigurationError(f"steps {steps!r} has an end out of the 64-bit range")
    return number


def parse_steps(steps: Any) -> tuple[int | None, int | None]:
    """``(first, last)`` from ``(a, b)`` (either None) or ``"A:B"``; ``"A"`` is step A alone."""
    if steps is None:
        return None, None
    if isinstance(steps, str):
        if steps.count(":") > 1:
            raise ConfigurationError(f"steps {steps!r} is not a step range; expected {_STEPS_FORM}")
        if ":" not in steps:
            if not steps.strip():
                raise ConfigurationError(f"steps {steps!r} is empty; expected {_STEPS_FORM}")
            only = _step(steps, steps)
            return only, only
        start, end = steps.split(":")
        first, last = _step(start, steps), _step(end, steps)
    elif isinstance(steps, (tuple, list)) and len(steps) == 2:
        if any(isinstance(end, str) for end in steps):
            raise ConfigurationError(
                f"steps {steps!r} has a text end; expected (first, last) as ints or None"
            )
        first, last = (_step(end, steps) for end in steps)
    else:
        raise ConfigurationError(
            f"steps {steps!r} is a {type(steps).__name__}; expected (first, last) with ints or "
            f"None (inclusive), or a string {_STEPS_FORM}"
        )
    if first is not None and last is not None and first > last:
        raise ConfigurationError(f"steps {steps!r} is empty: its first step is after its last")
    return first, last


def parse_window(*, head: Any, tail: Any, steps: Any, every: Any) -> Window:
    """A checked `Window`; ConfigurationError naming the bad value."""
    first, last = parse_steps(steps)
    return Window(
        head=_count("head", head, least=0),
        tail=_count("tail", tail, least=0),
        first=first,
        last=last,
        every=_count("every", every, least=1),
    )


# -- SQL --------------------------------------------------------------------------------------

_POS, _RANK, _TOTAL = '"#pos"', '"#rank"', '"#total"'  # never a metric column: '#' is not allowed


def _raw(alias: str, sel: Selection) -> str:
    """The stored columns of a step, for a subquery that picks steps."""
    cols = [f"{alias}.{name}" for name in ("run_id", "step", "logged_at", *sel.columns, "extra")]
    return ", ".join(cols)


def _final(alias: str, sel: Selection, dialect: Dialect) -> str:
    """The columns a history query returns: run_id (when several runs), step, logged_at as
    an epoch integer, the metric columns, extra."""
    cols = [f"{alias}.run_id"] if len(sel.ids) > 1 else []
    cols += [f"{alias}.step", dialect.epoch_sql(f"{alias}.logged_at") + " AS logged_at"]
    cols += [f"{alias}.{name}" for name in sel.columns]
    return ", ".join([*cols, f"{alias}.extra"])


def _conditions(sel: Selection, window: Window, dialect: Dialect) -> tuple[list[str], list[Any]]:
    """The step range and the asked keys, on ``metrics AS m`` (the run is chosen apart)."""
    where: list[str] = []
    params: list[Any] = []
    if window.first is not None:
        where.append("m.step >= ?")
        params.append(window.first)
    if window.last is not None:
        where.append("m.step <= ?")
        params.append(window.last)
    if sel.filter_columns or sel.filter_keys:
        present = [f"m.{name} IS NOT NULL" for name in sel.filter_columns]
        if sel.filter_keys:  # a value kept in extra counts: over budget, or not fitting its column
            marks = ", ".join("?" for _ in sel.filter_keys)
            members, valued = object_members_sql(dialect, "m.extra", "j")
            present.append(
                f"(m.extra IS NOT NULL AND EXISTS (SELECT 1 FROM {members} "
                f"WHERE j.key IN ({marks}) AND {valued}))"
            )
            params.extend(sel.filter_keys)
        where.append("(" + " OR ".join(present) + ")")
    return where, params


def _runs(ids: Sequence[int]) -> tuple[str, list[Any]]:
    if len(ids) == 1:
        return "m.run_id = ?", [ids[0]]
    return f"m.run_id IN ({', '.join('?' for _ in ids)})", list(ids)


def _where(sel: Selection, window: Window, dialect: Dialect) -> tuple[str, list[Any]]:
    runs, params = _runs(sel.ids)
    where, more = _conditions(sel, window, dialect)
    return " AND ".join([runs, *where]), params + more


def _order(sel: Selection, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return f"{prefix}run_id, {prefix}step" if len(sel.ids) > 1 else f"{prefix}step"


def _numbered(sel: Selection, window: Window, dialect: Dialect) -> tuple[str, list[Any]]:
    """Every `every`-th step of each run, as a subquery ``e`` (raw columns)."""
    where, params = _where(sel, window, dialect)
    numbered = (
        f"SELECT {_raw('m', sel)}, ROW_NUMBER() OVER (PARTITION BY m.run_id ORDER BY m.step) "
        f"AS {_POS} FROM metrics AS m WHERE {where}"
    )
    return (
        f"SELECT {_raw('e', sel)} FROM ({numbered}) AS e WHERE (e.{_POS} - 1) % ? = 0",
        [*params, window.every],
    )


def history_queries(sel: Selection, window: Window, dialect: Dialect) -> list[Query]:
    """The statements reading the chosen steps, ordered by run and step; with `head` and
    `tail` both, a step may come twice (from each end): the caller drops the repeats."""
    if window.cut and window.every is None:
        return [
            _branches(sel, sel.ids[i : i + BRANCH_RUNS], window, dialect)
            for i in range(0, len(sel.ids), BRANCH_RUNS)
        ]
    if window.every is None:
        where, params = _where(sel, window, dialect)
        text = f"SELECT {_final('m', sel, dialect)} FROM metrics AS m WHERE {where}"
        return [Query(f"{text} ORDER BY {_order(sel, 'm')}", params)]
    source, params = _numbered(sel, window, dialect)
    if not window.cut:
        text = f"SELECT {_final('h', sel, dialect)} FROM ({source}) AS h"
        return [Query(f"{text} ORDER BY {_order(sel, 'h')}", params)]
    ranked = (
        f"SELECT {_raw('r', sel)}, ROW_NUMBER() OVER (PARTITION BY r.run_id ORDER BY r.step) "
        f"AS {_RANK}, COUNT(*) OVER (PARTITION BY r.run_id) AS {_TOTAL} FROM ({source}) AS r"
    )
    text = (
        f"SELECT {_final('h', sel, dialect)} FROM ({ranked}) AS h "
        f"WHERE h.{_RANK} <= ? OR h.{_RANK} > h.{_TOTAL} - ? ORDER BY {_order(sel, 'h')}"
    )
    return [Query(text, [*params, window.head or 0, window.tail or 0])]


def _branches(sel: Selection, ids: Sequence[int], window: Window, dialect: Dialect) -> Query:
    """One ``ORDER BY step LIMIT n`` subquery per run and end, in one compound statement."""
    where, more = _conditions(sel, window, dialect)
    parts: list[str] = []
    params: list[Any] = []
    ends = [(window.head, "ASC"), (window.tail, "DESC")]
    for run_id in ids:
        for count, direction in ends:
            if count is None:
                continue
            condition = " AND ".join(["m.run_id = ?", *where])
            alias = f"b{len(parts)}"
            parts.append(
                f"SELECT * FROM (SELECT {_final('m', sel, dialect)} FROM metrics AS m "
                f"WHERE {condition} ORDER BY m.step {direction} LIMIT ?) AS {alias}"
            )
            params += [run_id, *more, count]
    return Query(" UNION ALL ".join(parts) + f" ORDER BY {_order(sel)}", params)


def count_query(sel: Selection, window: Window, dialect: Dialect) -> Query:
    """How many steps of each run match the keys and the step range: ``(run_id, count)`` rows
    (every N-th of `count` steps is ``ceil(count / N)`` of them)."""
    where, params = _where(sel, window, dialect)
    return Query(
        f"SELECT m.run_id, count(*) FROM metrics AS m WHERE {where} GROUP BY m.run_id", params
    )
