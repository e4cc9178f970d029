"""The background writer: merges logged rows by step and writes them in batches.

`Run.log` converts values on the caller's thread and appends ``(step, time, values)`` to a
deque; this module's thread drains it every `flush_interval` seconds (sooner when
`max_pending` rows wait or someone calls `flush`), resolves keys to columns through the
`ColumnRegistry`, and writes one batch per run in one transaction. When the database is
unreachable the merged rows stay in memory and are retried with backoff, in order.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
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
from ._warn import logger, warn_once
from .errors import DatabaseError, SQLTrackError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["ColumnRegistry", "MetricWriter", "Operation"]

DEFAULT_COLUMN_BUDGET = 1000
HEARTBEAT_INTERVAL_S = 30.0  # at most; a tracker with a short stale_after beats faster
_MAX_BACKOFF_S = 30.0


class ColumnRegistry:
    """Process-wide cache of ``metric_columns`` for one database, and the way to add to it.

    Adding a column takes the schema lock and re-reads the table first, so processes adding
    the same key at once agree on one column.
    """

    def __init__(self, budget: int = DEFAULT_COLUMN_BUDGET) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        # key -> (column name, family); a None entry means "over budget: goes to extra"
        self._columns: dict[str, tuple[str, Family | None] | None] = {}
        self._sql_types: dict[str, str] = {}  # key -> SQL type, as metric_columns records it

    def known(self, key: str) -> bool:
        """Whether `key` is resolved: it has a column, or overflows to ``extra``."""
        return key in self._columns

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
        return known

    def refresh(self, backend: Backend) -> None:
        """Reload the whole mapping (after another process may have changed it)."""
        with self._lock:
            self._load(backend)

    def resolve(self, backend: Backend, wanted: dict[str, Family | None]) -> None:
        """Make sure every key in `wanted` has a column (or is marked as overflow)."""
        with self._lock:
            missing = {k: f for k, f in wanted.items() if k not in self._columns}
            if not missing:
                return
            known = self._load(backend)
            missing = {k: f for k, f in missing.items() if k not in self._columns and f is not None}
            if not missing:
                return
            with backend.transaction(exclusive=True):
                known = self._load(backend)
                table = backend.metric_table_columns()
                claimed = {name for name, _ in known.values()}
                count = len(known)
                for key, family in missing.items():
                    if key in known:
                        continue
                    if count >= self.budget:
                        self._columns[key] = None
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
                    self._columns[key] = (name, family_of_sql_type(sql_type))
                    self._sql_types[key] = sql_type

    def widen(self, backend: Backend, key: str) -> None:
        """Turn the int column of `key` into a float column (a fractional value arrived)."""
        with self._lock, backend.transaction(exclusive=True):
            self._load(backend)
            entry = self._columns.get(key)
            if not entry or entry[1] != "int":
                return  # someone else widened it already
            name, _ = entry
            sql_type = backend.column_types["float"]
            backend.widen_metric_column(name, sql_type)
            backend.execute(
                backend.sql("UPDATE metric_columns SET sql_type = ? WHERE key = ?"), (sql_type, key)
            )
            self._columns[key] = (name, "float")
            self._sql_types[key] = sql_type


class Operation:
    """A metadata write (status, tags, params, links) run by the writer thread in order."""

    __slots__ = ("done", "error", "fn")

    def __init__(self, fn: Callable[[Backend], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Marker:
    """A flush request: released once everything queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class MetricWriter:
    """Writes one run's rows from a background thread; see the module docstring."""

    def __init__(
        self,
        run_id: int,
        open_backend: Callable[[], Backend],
        release_backend: Callable[[Backend], None],
        registry: ColumnRegistry,
        *,
        label: str,
        flush_interval: float = 1.0,
        max_pending: int = 5000,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.run_id = run_id
        self.label = label
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.heartbeat_interval = heartbeat_interval
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self._open_backend = open_backend
        self._release_backend = release_backend
        self._registry = registry
        self._backend: Backend | None = None
        self._pending: dict[int, list[Any]] = {}  # step -> [logged_at, {key: value}]
        self._ops: list[Operation] = []
        self._markers: list[_Marker] = []
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = False
        self._failures = 0
        self._last_beat = time.monotonic()  # the run was made (or reopened) beating now
        self._max_written: int | None = None  # the highest step this writer has written

    # -- caller side -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the thread (lazily, so a process that forks before logging carries none)."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._loop, name=f"sqltrack-writer-{self.label}", daemon=True
                )
                self._thread.start()

    def submit(self, operation: Operation) -> None:
        self.queue.append(operation)
        self.ensure_started()
        self.wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False if `timeout` ran out first."""
        marker = _Marker()
        self.queue.append(marker)
        self.ensure_started()
        self.wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the thread and close the connection; False if data is left unwritten."""
        flushed = self.flush(timeout) if self._thread is not None or self.queue else True
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if not flushed else 5.0)
        idle = thread is None or not thread.is_alive()
        if flushed and idle and self._backend is not None:
            self._release_backend(self._backend)  # back to the tracker's pool for the next run
            self._backend = None
        return flushed

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's thread and connection without touching them."""
        if self._backend is not None:
            self._backend.abandon()
            self._backend = None
        self._thread = None
        self._start_lock = threading.Lock()
        self.queue.clear()
        self._pending.clear()
        self._ops.clear()
        self._markers.clear()

    @property
    def unwritten(self) -> int:
        """How many logged steps wait in memory."""
        return len(self._pending) + sum(1 for item in self.queue if type(item) is tuple)

    # -- writer thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            delay = (
                min(self.flush_interval, self.heartbeat_interval)
                if self._failures == 0
                else self._backoff()
            )
            self.wake.wait(delay)
            self.wake.clear()
            try:
                self._flush_once()
            except BaseException as exc:
                logger.exception("sqltrack writer for %s failed", self.label)
                self._failures += 1
                warn_once(self.label, "writer", f"sqltrack: writing run {self.label} failed: {exc}")
            if self._stopping and not self._has_work():
                return

    def _backoff(self) -> float:
        return float(min(_MAX_BACKOFF_S, 0.5 * 2 ** min(self._failures, 8)))

    def _has_work(self) -> bool:
        return bool(self.queue or self._pending or self._ops or self._markers)

    def _drain(self) -> None:
        pending = self._pending
        queue = self.queue
        while queue:
            item = queue.popleft()
            if type(item) is tuple:
                step, logged_at, values = item
                row = pending.get(step)
                if row is None:
                    pending[step] = [logged_at, values]
                else:  # the same step again: merge, later values win; None means "no value"
                    row[0] = logged_at
                    merged = {**row[1], **values}
                    for key, value in values.items():
                        if value is None and row[1].get(key) is not None:
                            merged[key] = row[1][key]
                    row[1] = merged
            elif type(item) is _Marker:
                self._markers.append(item)
            else:
                self._ops.append(item)

    def _flush_once(self) -> None:
        self._drain()
        now = time.monotonic()
        heartbeat_due = now - self._last_beat >= self.heartbeat_interval
        if not (self._pending or self._ops or self._markers or heartbeat_due):
            return
        try:
            backend = self._connection()
            if self._pending:
                # A batch beats only when a beat is due: the UPDATE of runs costs a statement
                # (a round trip on PostgreSQL) per batch otherwise.
                beat = time.time() if heartbeat_due else None
                try:
                    self._write_pending(backend, beat)
                except DatabaseError as exc:
                    if backend.is_disconnect(exc):
                        raise
                    self._write_row_by_row(backend, exc, beat)
            elif heartbeat_due:
                backend.execute(
                    backend.sql("UPDATE runs SET heartbeat_at = ? WHERE id = ?"),
                    (backend.timestamp(time.time()), self.run_id),
                )
            self._run_ops(backend)
        except DatabaseError as exc:
            if self._backend is not None and self._backend.is_disconnect(exc):
                self._lost(exc)
                return
            raise
        if self._failures:
            logger.warning("sqltrack: database is back; run %s is written again", self.label)
        self._failures = 0
        if heartbeat_due:
            self._last_beat = now
        for marker in self._markers:
            marker.done.set()
        self._markers.clear()

    def _connection(self) -> Backend:
        if self._backend is None:
            self._backend = self._open_backend()
        return self._backend

    def _lost(self, exc: BaseException) -> None:
        self._failures += 1
        warn_once(
            self.label,
            "unreachable",
            f"sqltrack: the database is unreachable ({exc}); run {self.label} keeps its "
            f"{len(self._pending)} unwritten steps in memory and retries with backoff",
        )
        if self._backend is not None:
            with contextlib.suppress(SQLTrackError):
                self._backend.reconnect()

    def _run_ops(self, backend: Backend) -> None:
        while self._ops:
            op = self._ops[0]
            try:
                op.fn(backend)
            except DatabaseError as exc:
                if backend.is_disconnect(exc):
                    raise
                op.error = exc
            except Exception as exc:
                op.error = exc
            self._ops.pop(0)
            op.done.set()

    # -- building batches --------------------------------------------------------------------

    def _write_pending(self, backend: Backend, heartbeat: float | None) -> None:
        registry = self._registry
        steps = sorted(self._pending)
        rows = [self._pending[s] for s in steps]
        # Every key of the batch, in the order first seen (that order names new columns).
        present = dict.fromkeys(chain.from_iterable(values for _, values in rows))
        unknown = [key for key in present if not registry.known(key)]
        if unknown:
            seen: dict[str, list[Family | None]] = {key: [] for key in unknown}
            for _, values in rows:
                for key, value in values.items():
                    families = seen.get(key)
                    if families is not None:
                        families.append(family_of(value))
            registry.resolve(backend, {k: narrow(f) for k, f in seen.items()})
        keys: dict[str, tuple[str, Family | None]] = {}
        for key in present:
            entry = registry.get(key)
            if entry is None:
                continue
            if entry[1] == "int" and any(
                needs_widening(values.get(key), "int") for _, values in rows
            ):  # a fractional or non-finite float arrived for an int column
                registry.widen(backend, key)
                entry = registry.get(key) or entry
            keys[key] = entry

        ordered = [(key, family) for key, (_, family) in keys.items()]
        overflow = len(keys) < len(present)  # some keys have no column: their values go to extra
        # Steps past the last one written here (or a first batch) most likely need no merge:
        # PostgreSQL then COPYs them at once, and merges only if the database refuses that.
        fresh = self._max_written is None or steps[0] > self._max_written
        batch = MetricBatch(
            self.run_id,
            list(keys.values()),
            sql_types=[registry.sql_type(key) for key in keys],
            fresh=fresh,
        )
        append = batch.rows.append
        for step, (logged_at, values) in zip(steps, rows, strict=False):
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
                        self.label,
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
                    if key not in keys:  # over the column budget, or only None so far
                        extra = extra if extra is not None else {}
                        extra[key] = value
            out.append(None if extra is None else _json.dumps(_extra_json(extra)))
            append(tuple(out))
        backend.write_metrics(batch, heartbeat)
        self._pending.clear()
        if self._max_written is None or steps[-1] > self._max_written:
            self._max_written = steps[-1]

    def _write_row_by_row(
        self, backend: Backend, error: DatabaseError, heartbeat: float | None
    ) -> None:
        """A batch the database refused (e.g. a user-typed column): isolate the bad steps.

        Each step is retried alone; a step refused again is written with all its values in
        ``extra``, so nothing is lost.
        """
        warn_once(
            self.label,
            "refused",
            f"sqltrack: the database refused a batch ({error}); "
            "retrying step by step, refused values go to metrics.extra",
        )
        pending = self._pending
        self._pending = {}
        try:
            for step, row in sorted(pending.items()):
                self._pending = {step: row}
                try:
                    self._write_pending(backend, heartbeat)
                except DatabaseError as exc:
                    if backend.is_disconnect(exc):
                        raise
                    logged_at, values = row
                    batch = MetricBatch(self.run_id, [])
                    batch.rows.append((step, logged_at, _json.dumps(_extra_json(values))))
                    backend.write_metrics(batch, heartbeat)
                del pending[step]
        finally:
            pending.update(self._pending)
            self._pending = pending


def _extra_json(extra: dict[str, Any]) -> dict[str, Any]:
    """Values of ``extra`` as JSON: floats may be non-finite, dict/list values are converted."""
    return {k: _json.metric_json(v, repr(k)) for k, v in extra.items()}
