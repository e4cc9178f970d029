"""Writing merged rows of one run into any tracking database: the column registry and `write_steps`.

The background writer, the spool and `sqltrack sync` all write rows through `write_steps`, so a
value lands in the same typed column (or ``extra``) whichever path brought it.
"""

from __future__ import annotations

import threading
import time
from itertools import chain
from typing import TYPE_CHECKING, Any

from . import _json
from ._backends import MetricBatch
from ._columns import (
    FIXED_COLUMNS,
    Family,
    column_name,
    family_of,
    family_of_sql_type,
    fits,
    narrow,
    needs_widening,
)
from ._columns import sanitize as sanitize_key
from ._warn import warn_once
from .errors import DatabaseError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["DEFAULT_COLUMN_BUDGET", "ColumnRegistry", "Steps", "write_steps"]

DEFAULT_COLUMN_BUDGET = 1000
#: A key whose column the database refused to add (no privilege, say) goes to ``extra`` for
#: this long before adding its column is tried again.
BLOCKED_RETRY_S = 300.0
_HOLD_FIRST_S, _HOLD_MAX_S = 1.0, 30.0

#: step -> [logged_at (Unix time), {key: converted value}]
Steps = dict[int, list[Any]]


class ColumnRegistry:
    """Process-wide cache of ``metric_columns`` for one database, and the way to add to it.

    Adding a column takes the schema lock and re-reads the table first, so processes adding
    the same key at once agree on one column. A key whose column cannot be added right now is
    *held* (DDL gave up on a table lock: its values wait and the add is retried with backoff)
    or *blocked* (the database refused it: its values go to ``extra`` until a later retry).
    """

    def __init__(self, budget: int = DEFAULT_COLUMN_BUDGET) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        # key -> (column name, family); a None entry means "over budget: goes to extra"
        self._columns: dict[str, tuple[str, Family | None] | None] = {}
        self._sql_types: dict[str, str] = {}  # key -> SQL type, as metric_columns records it
        self._held: dict[str, float] = {}  # key -> monotonic time of the next try
        self._hold_delay = _HOLD_FIRST_S
        self._blocked: dict[str, float] = {}

    def known(self, key: str) -> bool:
        """Whether `key` is resolved: it has a column, overflows to ``extra``, or waits."""
        if key in self._columns:
            return True
        now = time.monotonic()
        return self._held.get(key, 0.0) > now or self._blocked.get(key, 0.0) > now

    def held(self, key: str) -> bool:
        """Whether `key`'s values must wait: its column could not be added for a lock."""
        return key not in self._columns and self._held.get(key, 0.0) > time.monotonic()

    def get(self, key: str) -> tuple[str, Family | None] | None:
        """Return the column and family of a resolved `key`; None if it goes to ``extra``."""
        return self._columns.get(key)

    def sql_type(self, key: str) -> str | None:
        """Return the recorded SQL type of a resolved `key`'s column (None if it has none)."""
        return self._sql_types.get(key)

    def _load(self, backend: Backend) -> dict[str, tuple[str, str]]:
        _, rows = backend.fetchall("SELECT key, column_name, sql_type FROM metric_columns")
        known = {key: (name, sql_type) for key, name, sql_type in rows}
        for key, (name, sql_type) in known.items():
            self._columns[key] = (name, family_of_sql_type(sql_type))
            self._sql_types[key] = sql_type
            self._held.pop(key, None)
            self._blocked.pop(key, None)
        return known

    def refresh(self, backend: Backend) -> None:
        """Reload the whole mapping (after another process may have changed it)."""
        with self._lock:
            self._load(backend)

    def resolve(self, backend: Backend, wanted: dict[str, Family | None], *, label: str) -> None:
        """Make sure every key in `wanted` has a column, overflows, or waits (see the class)."""
        with self._lock:
            missing = {k: f for k, f in wanted.items() if k not in self._columns}
            if not missing:
                return
            self._load(backend)
            missing = {k: f for k, f in missing.items() if k not in self._columns and f is not None}
            if not missing:
                return
            try:
                self._add(backend, missing, label)
            except DatabaseError as exc:
                if backend.is_disconnect(exc):
                    raise
                now = time.monotonic()
                if backend.is_lock_timeout(exc):
                    # Another session holds a lock on metrics (an analyst's open transaction):
                    # waiting for it would queue every reader and writer behind our ALTER.
                    for key in missing:
                        self._held[key] = now + self._hold_delay
                    self._hold_delay = min(self._hold_delay * 2, _HOLD_MAX_S)
                    warn_once(
                        self,
                        "held",
                        f"sqltrack: new metric column(s) for {sorted(missing)!r:.120} must wait: "
                        f"another session holds a lock on the metrics table ({exc}); their values "
                        "are kept and written once the column can be added",
                    )
                    return
                for key in missing:
                    self._blocked[key] = now + BLOCKED_RETRY_S
                warn_once(
                    self,
                    "blocked",
                    f"sqltrack: the database refused a column for {sorted(missing)!r:.120} "
                    f"({exc}); their values go to metrics.extra (other keys keep their columns) "
                    f"and adding the column is tried again every {BLOCKED_RETRY_S:.0f} s",
                )
                return
            self._hold_delay = _HOLD_FIRST_S

    def _add(self, backend: Backend, missing: dict[str, Family | None], label: str) -> None:
        with backend.transaction(exclusive=True):
            known = self._load(backend)
            table = backend.metric_table_columns()
            claimed = {name for name, _ in known.values()}
            count = len(known)
            added: dict[str, tuple[str, str]] = {}
            for key, family in missing.items():
                if key in known:
                    continue
                if count >= self.budget:
                    self._columns[key] = None
                    warn_once(
                        self,
                        "budget",
                        f"sqltrack: the metrics table reached its budget of {self.budget} metric "
                        f"columns; {key!r} and later new keys go to metrics.extra (still "
                        "queryable); connect(column_budget=...) allows up to 1500",
                    )
                    continue
                base = sanitize_key(key)
                if base not in claimed and base in table and base not in FIXED_COLUMNS:
                    name, sql_type = base, table[base]  # predeclared by the user: adopt it
                else:
                    name = column_name(key, claimed | set(table))
                    sql_type = backend.column_types[family]  # type: ignore[index]
                    backend.add_metric_column(name, sql_type)
                backend.execute(
                    backend.sql(
                        "INSERT INTO metric_columns (key, column_name, sql_type) VALUES (?, ?, ?)"
                    ),
                    (key, name, sql_type),
                )
                claimed.add(name)
                count += 1
                added[key] = (name, sql_type)
        # Only once committed: a rolled-back column must not be believed in.
        for key, (name, sql_type) in added.items():
            self._columns[key] = (name, family_of_sql_type(sql_type))
            self._sql_types[key] = sql_type

    def widen(self, backend: Backend, key: str) -> bool:
        """Turn the int column of `key` into a float column (a fractional value arrived).

        Returns False if the database could not take the table lock now (retry later).
        """
        with self._lock:
            try:
                with backend.transaction(exclusive=True):
                    self._load(backend)
                    entry = self._columns.get(key)
                    if not entry or entry[1] != "int":
                        return True  # someone else widened it already
                    name, _ = entry
                    sql_type = backend.column_types["float"]
                    backend.widen_metric_column(name, sql_type)
                    backend.execute(
                        backend.sql("UPDATE metric_columns SET sql_type = ? WHERE key = ?"),
                        (sql_type, key),
                    )
            except DatabaseError as exc:
                if backend.is_lock_timeout(exc):
                    return False
                raise
            self._columns[key] = (name, "float")
            self._sql_types[key] = sql_type
            return True


def write_steps(
    backend: Backend,
    registry: ColumnRegistry,
    run_id: int,
    steps: Steps,
    *,
    label: str,
    fresh: bool = False,
    heartbeat: float | None = None,
    hold: bool = True,
) -> Steps:
    """Write `steps` of run `run_id`, merging into steps it has; return the values that wait.

    A key whose column cannot be added now (a lock; see `ColumnRegistry`) keeps its values out
    of this write: they come back, by step, for a later call (with ``hold=False`` they go to
    ``extra`` instead). A batch the database refuses is written step by step, and a value it
    refuses alone goes to ``extra``; every other value keeps its column. `fresh` says every step
    is new to the run (a plain insert is tried first).

    Raises:
        DatabaseError: a disconnect, or a write that gave up on a lock (nothing is lost:
            writing the same steps again merges).
    """
    if not steps:
        return {}
    try:
        return _write(backend, registry, run_id, steps, label, fresh, heartbeat, hold)
    except DatabaseError as exc:
        if _transient(backend, exc):
            raise
        return _write_refused(backend, registry, run_id, steps, label, exc, heartbeat, hold)


def _transient(backend: Backend, exc: DatabaseError) -> bool:
    """Whether `exc` says nothing about the values: the connection, or a lock, is to blame."""
    return backend.is_disconnect(exc) or backend.is_lock_timeout(exc)


def _write(
    backend: Backend,
    registry: ColumnRegistry,
    run_id: int,
    steps: Steps,
    label: str,
    fresh: bool,
    heartbeat: float | None,
    hold: bool,
) -> Steps:
    order = sorted(steps)
    rows = [steps[s] for s in order]
    # Every key of the batch, in the order first seen (that order names new columns).
    present = dict.fromkeys(chain.from_iterable(values for _, values in rows))
    keys, waiting = _columns_for(backend, registry, rows, present, label, hold)
    held: Steps = {}
    if waiting:
        for step, (logged_at, values) in zip(order, rows, strict=True):
            kept = {key: values[key] for key in waiting if key in values}
            if kept:
                held[step] = [logged_at, kept]

    ordered = [(key, family) for key, (_, family) in keys.items()]
    overflow = len(keys) + len(waiting) < len(present)  # some keys go to extra
    batch = MetricBatch(
        run_id,
        list(keys.values()),
        sql_types=[registry.sql_type(key) for key in keys],
        fresh=fresh,
    )
    append = batch.rows.append
    for step, (logged_at, values) in zip(order, rows, strict=True):
        extra: dict[str, Any] | None = None
        out: list[Any] = [step, logged_at]
        for key, family in ordered:
            value = values.get(key)
            if value is None or (type(value) is float and family == "float"):
                pass  # the common case: nothing to check or convert
            elif not fits(value, family):
                extra = extra if extra is not None else {}
                extra[key] = value
                warn_once(
                    label,
                    f"extra:{key}",
                    f"sqltrack: value {value!r:.60} of {key!r} does not fit its "
                    f"{family or 'user-typed'} column; stored in metrics.extra instead",
                )
                value = None
            elif family == "int" and type(value) is float:
                value = int(value)
            elif family == "json":
                value = _json.dumps(value)
            out.append(value)
        if overflow:
            for key, value in values.items():
                if key not in keys and key not in waiting:  # over budget, blocked, or only None
                    extra = extra if extra is not None else {}
                    extra[key] = value
        out.append(None if extra is None else _json.dumps(extra_json(extra)))
        append(tuple(out))
    if batch.rows:
        backend.write_metrics(batch, heartbeat)
    return held


def _columns_for(
    backend: Backend,
    registry: ColumnRegistry,
    rows: list[list[Any]],
    present: dict[str, None],
    label: str,
    hold: bool,
) -> tuple[dict[str, tuple[str, Family | None]], list[str]]:
    """The column of each key of a batch (adding and widening columns as needed), and the keys
    whose values wait (a held column; with `hold` false they go to ``extra`` instead). A key
    in neither goes to ``extra`` (over budget, blocked)."""
    unknown = [key for key in present if not registry.known(key)]
    if unknown:
        seen: dict[str, list[Family | None]] = {key: [] for key in unknown}
        for _, values in rows:
            for key, value in values.items():
                families = seen.get(key)
                if families is not None:
                    families.append(family_of(value))
        registry.resolve(backend, {k: narrow(f) for k, f in seen.items()}, label=label)
    keys: dict[str, tuple[str, Family | None]] = {}
    waiting: list[str] = []
    for key in present:
        if registry.held(key):
            if hold:
                waiting.append(key)
            continue
        entry = registry.get(key)
        if entry is None:
            continue
        if entry[1] == "int" and any(needs_widening(values.get(key), "int") for _, values in rows):
            # a fractional or non-finite float arrived for an int column
            if not registry.widen(backend, key):
                waiting.append(key)
                continue
            entry = registry.get(key) or entry
        keys[key] = entry
    return keys, waiting


def _write_refused(
    backend: Backend,
    registry: ColumnRegistry,
    run_id: int,
    steps: Steps,
    label: str,
    error: DatabaseError,
    heartbeat: float | None,
    hold: bool,
) -> Steps:
    """A batch the database refused (a user-typed column, a value it rejects): write each step
    alone, and of a step refused again each value alone, so only the refused value moves to
    ``extra``."""
    warn_once(
        label,
        "refused",
        f"sqltrack: the database refused a batch ({error}); writing it step by step, and a "
        "value it refuses goes to metrics.extra",
    )
    held: Steps = {}

    def attempt(step: int, row: list[Any], beat: float | None) -> DatabaseError | None:
        """Write one step (or one value of it); the error if the database refused it."""
        try:
            held.update(_write(backend, registry, run_id, {step: row}, label, False, beat, hold))
        except DatabaseError as exc:
            if _transient(backend, exc):
                raise
            return exc
        return None

    for step, (logged_at, values) in sorted(steps.items()):
        if attempt(step, [logged_at, values], heartbeat) is None:
            continue
        for key, value in values.items():
            refused = attempt(step, [logged_at, {key: value}], None)
            if refused is None:
                continue
            warn_once(
                label,
                f"refused:{key}",
                f"sqltrack: the database refused value {value!r:.60} of {key!r} ({refused}); "
                "stored in metrics.extra instead",
            )
            batch = MetricBatch(run_id, [])
            batch.rows.append((step, logged_at, _json.dumps(extra_json({key: value}))))
            backend.write_metrics(batch, None)
    return held


def extra_json(extra: dict[str, Any]) -> dict[str, Any]:
    """Values of ``extra`` as JSON: floats may be non-finite, dict/list values are converted."""
    return {k: _json.metric_json(v, repr(k)) for k, v in extra.items()}
