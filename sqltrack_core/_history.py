"""Metric histories: `Tracker.metrics` (the `HistoryReader` mixin), the key checks, the frame.

The steps are chosen in SQL (`_history_sql`); this module checks the keys, runs the queries
and builds the DataFrame. pandas is imported only inside the functions that need it.
"""

from __future__ import annotations

import threading
import uuid as uuid_module
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _json, _rows
from ._backends.json_keys import object_keys_sql
from ._columns import Family, family_of_sql_type
from ._history_sql import Selection, Window, count_query, history_queries, parse_window
from ._suggest import did_you_mean
from .errors import ConfigurationError, MissingDependencyError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from ._backends import Backend
    from ._backends.dialect import Dialect
    from .runs import Run

__all__ = [
    "HistoryReader",
    "datetimes",
    "metric_columns",
    "read",
    "require_pandas",
    "unique_labels",
]

#: the frame's own columns; a metric key equal to one is shown with a trailing underscore
FRAME_COLUMNS = ("run_id", "step", "logged_at")
_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean"}


class HistoryReader:
    """Mixed into `Tracker`: `metrics`, the history of runs, step by step."""

    _lock: threading.RLock

    if TYPE_CHECKING:  # what Tracker defines

        @property
        def backend(self) -> Backend: ...

        def run_id(self, ref: Run | int | str | uuid_module.UUID) -> int: ...

    def metrics(
        self,
        run_ids: int | Run | Iterable[int | Run],
        keys: str | Iterable[str] | None = None,
        *,
        head: int | None = None,
        tail: int | None = None,
        steps: tuple[int | None, int | None] | str | None = None,
        every: int | None = None,
    ) -> pd.DataFrame:
        """One row per run and step, one column per metric named by its original key.

        Example::

            tracker.metrics(run.id, ["val/acc"], tail=5)   # the last 5 validation steps

        Steps are chosen in the database, per run, in this order: `steps` and `keys` keep
        the steps in range with a value of one of the keys, `every` keeps every N-th of
        those, and `head`/`tail` the first/last ones of what is left.

        Args:
            run_ids: a run id or `Run`, or several; rows are ordered by run id and step.
            keys: only these metrics (a key or a list), as columns in this order, and only
                the steps where at least one of them has a value (one kept in
                ``metrics.extra`` counts; a stored NaN is a value). Without keys, every
                metric with a value in the rows returned.
            head: the first `head` steps of each run.
            tail: the last `tail` steps of each run. With `head` too, both ends (each step
                once), and ``df.attrs["omitted_steps"]`` maps each run id to the number of
                steps between them left out.
            steps: ``(first, last)``, inclusive, either end None for open; or the text
                ``"A:B"`` (``"100:200"``, ``":500"``, ``"1000:"``), ``"A"`` for step A alone.
            every: every N-th step: the first step of each run (after `steps` and `keys`)
                and each N-th one after it, by position, whatever the step numbers are
                (steps 0, 10, 20, ... logged every 10 steps give 0, 100, 200, ... with
                ``every=10``).

        A metric whose key is one of the frame's own columns (``run_id``, ``step``,
        ``logged_at``) is shown with a trailing underscore (``step_``).

        Raises:
            NotFoundError: a run id or a key no run of the database logged, with the likely
                one.
            ConfigurationError: a bad run id, key, count or step range, naming it.
        """
        window = parse_window(head=head, tail=tail, steps=steps, every=every)
        ids = _rows.run_ids(run_ids)
        with self._lock:
            for run_id in sorted(set(ids)):  # an unknown id is a typo, not an empty history
                self.run_id(run_id)
            return read(self.backend, ids, keys, window)


def require_pandas() -> None:
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


def read(
    b: Backend,
    ids: list[int],
    keys: str | Iterable[str] | None = None,
    window: Window | None = None,
) -> pd.DataFrame:
    """See `HistoryReader.metrics`: the history of runs `ids` (checked ints)."""
    require_pandas()
    import pandas as pd

    window = window or Window()
    columns = metric_columns(b)
    wanted = None if keys is None else _keys(keys)
    if wanted is not None:
        _check_known(b, ids, wanted, columns)
    if not ids:
        labels = _labels(list(columns) if wanted is None else wanted)
        empty_frame: pd.DataFrame = pd.DataFrame(columns=[*FRAME_COLUMNS, *labels])
        return empty_frame
    selected = [(k, columns[k]) for k in (columns if wanted is None else wanted) if k in columns]
    quoted = tuple(b.quote(column) for _, (column, _) in selected)
    unique = tuple(sorted(set(ids)))
    sel = Selection(
        ids=unique,
        columns=quoted,
        filter_columns=quoted if wanted is not None else (),
        filter_keys=tuple(wanted or ()),
    )
    rows: list[tuple[Any, ...]] = []
    for query in history_queries(sel, window, b.dialect):
        rows += b.fetchall(b.sql(query.sql), query.params)[1]
    several = len(unique) > 1
    if window.head is not None and window.tail is not None:
        rows = _once(rows, 2 if several else 1)  # a short history comes from both ends
    df = _frame(rows, unique, selected, wanted, b.dialect)
    if window.head is not None and window.tail is not None:
        df.attrs["omitted_steps"] = _omitted(b, sel, window, df)
    return df


def _keys(keys: str | Iterable[str]) -> list[str]:
    """The asked keys, each once, in order; a single key may come as a str."""
    items = [keys] if isinstance(keys, str) else keys
    try:
        listed = list(items)
    except TypeError:
        raise ConfigurationError(
            f"keys {keys!r} is a {type(keys).__name__}; expected a metric key or a list of them"
        ) from None
    for key in listed:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"metric key {key!r} is a {type(key).__name__}; expected a str"
            )
    return list(dict.fromkeys(listed))


def _check_known(b: Backend, ids: list[int], wanted: list[str], columns: dict[str, Any]) -> None:
    """NotFoundError for a key that has no column and is in no ``extra`` of these runs,
    suggesting among the keys these runs logged (all keys if they logged none)."""
    missing = [key for key in wanted if key not in columns]
    if not missing:
        return
    extra = _extra_keys(b, ids)
    for key in missing:
        if key not in extra:
            known = logged_keys(b, ids, columns) | extra if ids else set()
            raise NotFoundError(did_you_mean(key, known or {*columns, *extra}, what="metric key"))


def _extra_keys(b: Backend, ids: list[int]) -> set[str]:
    """The keys in ``metrics.extra`` of runs `ids`."""
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    keys = object_keys_sql(b.dialect, "m.extra", "j")  # a key logged as None counts
    _, rows = b.fetchall(
        b.sql(
            f"SELECT DISTINCT j.key FROM metrics AS m, {keys} "
            f"WHERE m.run_id IN ({marks}) AND m.extra IS NOT NULL"
        ),
        ids,
    )
    return {key for (key,) in rows}


def logged_keys(b: Backend, ids: list[int], columns: dict[str, Any]) -> set[str]:
    """The keys with a column that runs `ids` have a value of (a scan of their rows)."""
    if not columns:
        return set()
    counts = ", ".join(f"count({b.quote(column)})" for column, _ in columns.values())
    marks = ", ".join("?" for _ in ids)
    _, rows = b.fetchall(
        b.sql(f"SELECT {counts} FROM metrics WHERE run_id IN ({marks})"),
        ids,
    )
    return {key for key, count in zip(columns, rows[0], strict=True) if count}


def _once(rows: list[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """`rows` (ordered by run and step) without repeats of a step."""
    kept: list[tuple[Any, ...]] = []
    previous: tuple[Any, ...] = ()
    for row in rows:
        key = row[:width]
        if key != previous:
            kept.append(row)
            previous = key
    return kept


def _omitted(b: Backend, sel: Selection, window: Window, df: pd.DataFrame) -> dict[int, int]:
    """Run id -> how many of its matching steps neither `head` nor `tail` returned."""
    query = count_query(sel, window, b.dialect)
    _, rows = b.fetchall(b.sql(query.sql), query.params)
    every = window.every or 1
    matched = {int(run_id): (int(count) + every - 1) // every for run_id, count in rows}
    shown = df["run_id"].value_counts().to_dict()
    return {run_id: matched.get(run_id, 0) - int(shown.get(run_id, 0)) for run_id in sel.ids}


def _frame(
    rows: list[tuple[Any, ...]],
    ids: tuple[int, ...],
    selected: list[tuple[str, tuple[str, Family | None]]],
    wanted: list[str] | None,
    dialect: Dialect,
) -> pd.DataFrame:
    """The history frame from the rows `history_queries` read: ``(run_id if several,) step,
    logged_at (epoch integer), the selected metric columns, extra``."""
    import numpy as np
    import pandas as pd

    families = {key: family for key, (_, family) in selected}
    fixed = 3 if len(ids) > 1 else 2
    # One tuple per column (zip runs in C); an empty result still has every column.
    raw: list[tuple[Any, ...]] = list(zip(*rows, strict=True))
    raw = raw or [()] * (fixed + len(selected) + 1)
    size = len(rows)
    stored = {key: raw[position] for position, (key, _) in enumerate(selected, start=fixed)}
    # Columns go in as arrays, so that the frame has no indexes to align; they are built
    # from the raw values (pandas inferring first would turn a missing int into a float64
    # NaN, rounding big ints, a missing bool into True, and a NaN into "missing").
    arrays = {key: _column_array(values, families[key], dialect) for key, values in stored.items()}
    extras = _extras(raw[-1], wanted)
    if wanted is None:  # keep only metrics with a value in these rows
        shown = [k for k in stored if k in extras or arrays[k] is not None]
        shown += [k for k in extras if k not in stored]
    else:
        shown = wanted
    data: dict[str, Any] = {
        "run_id": (
            np.fromiter(raw[0], dtype=np.int64, count=size)
            if len(ids) > 1
            else np.full(size, ids[0], dtype=np.int64)
        ),
        "step": np.fromiter(raw[fixed - 2], dtype=np.int64, count=size),
        "logged_at": datetimes(raw[fixed - 1], dialect),
    }
    for key, label in zip(shown, _labels(shown), strict=True):
        data[label] = _metric(
            key, stored.get(key), arrays.get(key), extras.get(key), families, dialect, size
        )
    df: pd.DataFrame = pd.DataFrame(data, copy=False)  # columns in insertion order
    return df


def _metric(
    key: str,
    values: tuple[Any, ...] | None,
    array: Any,
    extra: list[Any] | None,
    families: dict[str, Family | None],
    dialect: Dialect,
    size: int,
) -> Any:
    """One metric's column of the frame, from its column's values and those in extra."""
    import pandas as pd

    if values is None:  # no column: only in extra, or no value in these rows
        return pd.Series(extra or [None] * size, dtype=object)
    if extra is not None:  # a key with a column whose value did not fit it at some steps
        family = families[key]
        merged = [
            e if v is None else dialect.decode(v, family)
            for v, e in zip(values, extra, strict=True)
        ]
        return pd.Series(merged, dtype=object)
    if array is None:  # asked for by key, no value in these rows
        return _column_array(values, families[key], dialect, empty=True)
    return array


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


def datetimes(values: tuple[Any, ...], dialect: Dialect) -> Any:
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


def unique_labels(fixed: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Column labels for `keys` next to the `fixed` columns: each key as it is, except one
    equal to a fixed column or a label already taken, which gets trailing underscores
    (``step`` -> ``step_``), as `Tracker.metrics` and exports name them."""
    used = {*fixed, *keys}
    labels = []
    for key in keys:
        label = key
        if key in fixed:
            while label in used:
                label += "_"
            used.add(label)
        labels.append(label)
    return labels


def _labels(keys: list[str]) -> list[str]:
    """Frame column labels for metric `keys`: the keys, except those equal to a frame column."""
    return unique_labels(FRAME_COLUMNS, keys)
