"""Streamed metric rows -> the columns of an export file, one chunk at a time.

A chunk arrives as the driver's rows ``(run_id, step, logged_at, <key columns>, extra)``
and leaves as columns lined up with the file's header, holding the values that were logged
(floats with NaN and ±inf, bools, ints, text, decoded JSON; None where nothing was logged).
The work is done a column at a time in C where it can be (``zip``, list repetition, type
scans); Python looks at single values only where a column needs it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backends.dialect import Dialect
    from ._export_plan import Plan

__all__ = ["Shaper"]

Columns = list[Sequence[Any]]
_NONE = type(None)
#: per stored family that may need decoding, the types its values need none with
_READY = {"float": {float, _NONE}, "bool": {bool, _NONE}}


class Shaper:
    """Columns of the wide or long layout from the chunks of one export's queries."""

    def __init__(self, plan: Plan, dialect: Dialect, *, long: bool, skip_empty: bool) -> None:
        self._skip_empty = skip_empty and not long  # long rows are values: never empty
        self._runs = plan.runs
        self._dialect = dialect
        self._long = long
        self._keys = plan.keys
        self._labels = [k.key for k in plan.keys]
        self._head_width = 4 + len(plan.params)
        positions = itertools.count(3)  # after run_id, step, logged_at
        self._positions = [None if k.column is None else next(positions) for k in plan.keys]
        self._extra_json = any(k.in_extra for k in plan.keys)
        self._decode_json = dialect.decode_json

    def __call__(self, rows: list[tuple[Any, ...]]) -> tuple[Columns, int]:
        """The file's columns for `rows`, and how many metric values they hold."""
        raw: list[Sequence[Any]] = list(zip(*rows, strict=True))
        values = self._values(raw)
        if self._skip_empty:
            raw, values = _without_empty_rows(raw, values)
            if not raw[0]:
                return [[] for _ in range(self._head_width + 2 + len(values))], 0
        heads = self._heads(raw[0])
        if not self._long:
            count = sum(len(raw[0]) - v.count(None) for v in values)
            return [*heads, raw[1], raw[2], *values], count
        return self._unpivot(heads, raw[1], raw[2], values)

    def _heads(self, run_ids: Sequence[Any]) -> Columns:
        """The run's columns (id, uuid, experiment, name, params) for each row."""
        size = len(run_ids)
        if run_ids[0] == run_ids[-1]:  # rows come in run order: one run fills most chunks
            return [[value] * size for value in self._runs[run_ids[0]]]
        heads = [self._runs[r] for r in run_ids]
        return [[h[i] for h in heads] for i in range(self._head_width)]

    def _values(self, raw: list[Sequence[Any]]) -> Columns:
        """One column of logged values per key: its own column's, else what ``extra`` holds."""
        extras: list[Any] | None = None
        if self._extra_json and raw[-1].count(None) != len(raw[-1]):
            decode = self._decode_json
            extras = [None if e is None else decode(e) for e in raw[-1]]
        columns: Columns = []
        for key, position in zip(self._keys, self._positions, strict=True):
            column: Sequence[Any] = (
                [None] * len(raw[0])
                if position is None
                else self._decoded(raw[position], key.stored)
            )
            if extras is not None and key.in_extra:
                name = key.key
                column = [
                    (e.get(name) if e is not None else None) if v is None else v
                    for v, e in zip(column, extras, strict=True)
                ]
            columns.append(column)
        return columns

    def _decoded(self, values: Sequence[Any], family: str | None) -> Sequence[Any]:
        """A stored column's values as logged (SQLite's 'NaN' text and 0/1 bools, JSON text,
        PostgreSQL's Decimal of a NUMERIC column); as they are when they already are."""
        if family == "json":
            if values.count(None) == len(values):
                return values
            decode_json = self._decode_json
            return [None if v is None else decode_json(v) for v in values]
        ready = _READY.get(family or "")
        if ready is None or set(map(type, values)) <= ready:
            return values
        decode = self._dialect.decode
        return [decode(v, family) for v in values]

    def _unpivot(
        self, heads: Columns, steps: Sequence[Any], times: Sequence[Any], values: Columns
    ) -> tuple[Columns, int]:
        """Long layout: a row per logged value, keys in the wide layout's order."""
        labels = self._labels
        width = len(labels)
        if width and not any(None in v for v in values):  # every key at every step
            keys: list[Any] = labels * len(steps)
            logged: list[Any] = list(itertools.chain.from_iterable(zip(*values, strict=True)))
            spread = [_repeat_each(c, width) for c in (*heads, steps, times)]
            return [*spread, keys, logged], len(logged)
        index: list[int] = []
        keys, logged = [], []
        for i, row in enumerate(zip(*values, strict=True)):
            for label, value in zip(labels, row, strict=True):
                if value is not None:
                    index.append(i)
                    keys.append(label)
                    logged.append(value)
        spread = [[c[i] for i in index] for c in (*heads, steps, times)]
        return [*spread, keys, logged], len(logged)


def _repeat_each(column: Sequence[Any], times: int) -> list[Any]:
    """``[a, a, b, b]`` from ``[a, b]`` and 2, in C."""
    return list(itertools.chain.from_iterable(zip(*([column] * times), strict=True)))


def _without_empty_rows(raw: Columns, values: Columns) -> tuple[Columns, Columns]:
    """The rows where at least one key has a value (the wide layout with chosen keys)."""
    width = len(values)
    keep = [row.count(None) < width for row in zip(*values, strict=True)] if width else []
    if width and all(keep):
        return raw, values
    return (
        [list(itertools.compress(c, keep)) for c in raw],
        [list(itertools.compress(c, keep)) for c in values],
    )
