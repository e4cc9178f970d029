"""The background writer: merges logged rows by step, writes them in batches, survives outages.

`Run.log` converts values on the caller's thread and appends ``(step, time, values)`` to a
deque; this module's thread drains it every `flush_interval` seconds (sooner when
`max_pending` rows wait or someone calls `flush`) and writes one batch per run through
`_store.write_steps`. Metadata writes (`Operation`) run after the rows logged before them.

When the database goes away (refused, reset, closed, timed out, black-holed: every way is one
`DatabaseUnavailableError`) the writer goes offline: every flush interval it moves what waits
into this process's disk spool (`_spool`), so memory stays bounded and a killed process loses
at most one interval, while a probe thread reconnects with backoff for as long as the process
lives. Back online, it replays its run from the spool (`sync.copy_runs`, idempotent by run UUID
and step), removes it there, and goes on. It says so once when the database is lost and once
when it is back, with counts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sync
from ._probe import Prober
from ._queue import Marker, Operation, WriterThread
from ._spool import claim, delete_runs, open_spool, remove_files, spool_dir
from ._store import DEFAULT_COLUMN_BUDGET, ColumnRegistry, write_steps
from ._warn import logger, warn, warn_once
from .errors import DatabaseError, DatabaseUnavailableError, SQLTrackError

if TYPE_CHECKING:
    from ._backends import Backend
    from ._spool import Spool

__all__ = ["DEFAULT_COLUMN_BUDGET", "ColumnRegistry", "MetricWriter", "Operation"]

HEARTBEAT_INTERVAL_S = 30.0  # at most; a tracker with a short stale_after beats faster
_MAX_BACKOFF_S = 30.0
#: After this many failed cycles in a row that are not a lost connection (a bug, a database
#: that keeps refusing), what waits goes to the spool instead of being retried in memory.
_SPILL_AFTER_ERRORS = 3
#: A write that gets no answer for this long counts as a lost connection (a black hole).
WRITE_TIMEOUT_S = 10.0
#: How long `close` waits for the writer to move what is left into the spool.
_SPILL_WAIT_S = 5.0
#: How many of the latest steps the writer remembers the values of, to tell a value that
#: overwrites a different one at the same step.
_RECENT_STEPS = 16


class MetricWriter:
    """Writes one run's rows from a background thread; see the module docstring.

    `ensure_run(backend)` creates the run's row in a database if it is not there yet and returns
    its id (the run may have started while its database was away); `spool()` is this process's
    spool for the run's database.
    """

    def __init__(
        self,
        run_uuid: str,
        run_id: int | None,
        ensure_run: Callable[[Backend], int],
        open_backend: Callable[[], Backend],
        release_backend: Callable[[Backend], None],
        registry: ColumnRegistry,
        spool: Callable[[], Spool],
        *,
        label: str,
        flush_interval: float = 1.0,
        max_pending: int = 5000,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        offline: bool = False,
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.run_uuid = run_uuid
        self.write_timeout = write_timeout
        self.run_id = run_id
        self.label = label
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.heartbeat_interval = heartbeat_interval
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self._ensure_run = ensure_run
        self._open_backend = open_backend
        self._release_backend = release_backend
        self._registry = registry
        self._spool = spool
        # A run that started while its database was away spools from the start.
        self._init_state(offline=offline)

    def _init_state(self, *, offline: bool = False) -> None:
        self._backend: Backend | None = None
        self._pending: dict[int, list[Any]] = {}  # step -> [logged_at, {key: value}]
        self._ops: list[Operation] = []
        self._markers: list[Marker] = []
        self._thread: threading.Thread | None = None
        self._start_lock = threading.RLock()  # an RLock: SIGTERM's handler may re-enter it
        self._stopping = False
        self._final = False  # close() gave up on the database: spool what is left, then stop
        self._errors = 0  # failed cycles in a row that were not a lost connection
        self._last_beat = time.monotonic()  # the run was made (or reopened) beating now
        self._max_written: int | None = None  # the highest step this writer has written
        self._recent: dict[int, dict[str, Any]] = {}  # the latest steps' values, merged
        # offline: since when, how many steps went to the spool, and the probe reconnecting
        self._offline_since: float | None = time.monotonic() if offline else None
        self._outage_steps = 0
        self._spool_id: int | None = None  # the run's id in the spool, once it has one there
        self._spooled_steps = 0  # steps in the spool now (replayed and removed when back)
        self._spool_path: Path | None = None  # where a run that ended left what it could not send
        self._prober = Prober(self._open_backend, self.wake.set, self.label)

    # -- caller side -------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """Whether the database is away (rows go to the spool until it answers)."""
        return self._offline_since is not None

    @property
    def spool_path(self) -> Path | None:
        """The spool that holds this run's unsent rows and writes, if any."""
        if self._spool_path is not None:
            return self._spool_path
        return self._spool().path if self._spool_id is not None else None

    def ensure_started(self) -> None:
        """Start the thread (lazily, so a process that forks before logging carries none)."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = self._final = False
                self._prober.restart()
                self._thread = WriterThread(
                    self._loop, lambda: self.close(self.write_timeout), self.label
                )
                self._thread.start()

    def submit(self, operation: Operation) -> None:
        self.queue.append(operation)
        self.ensure_started()
        self.wake.set()

    def flush(self, timeout: float | None = None, *, strict: bool = False) -> bool:
        """Wait until everything queued so far is written; False if `timeout` ran out first.

        While the database is away this returns False as soon as everything is in the spool
        (training never waits for an outage), unless `strict` asks for the database itself.
        """
        marker = Marker(strict)
        self.queue.append(marker)
        self.ensure_started()
        self.wake.set()
        return marker.done.wait(timeout) and not marker.spooled

    def close(self, timeout: float | None = None) -> bool:
        """Flush for at most `timeout` seconds, then stop the thread; False if the database
        did not take everything in time (what is left is then in the spool: `spool_path`)."""
        self._prober.due_now()  # one more try at once if the database is away
        flushed = (
            self.flush(timeout, strict=True) if self._thread is not None or self.queue else True
        )
        if not flushed:
            self._final = True
            backend = self._backend
            if backend is not None and self._offline_since is None:
                backend.interrupt()  # a write blocked on a dead path: give up on it now
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_SPILL_WAIT_S)
        idle = thread is None or not thread.is_alive()
        if flushed and idle and self._backend is not None:
            self._backend.set_io_timeout(None)  # readers wait as long as it takes
            self._release_backend(self._backend)  # back to the tracker's pool for the next run
            self._backend = None
        return flushed

    def request_stop(self) -> None:
        """Ask the thread to end once what waits is written, without waiting (any thread)."""
        self._stopping = True
        self.wake.set()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's thread and connection without touching them."""
        if self._backend is not None:
            self._backend.abandon()
        self.queue.clear()
        self._init_state()

    @property
    def unwritten(self) -> int:
        """How many logged steps wait in memory or in the spool."""
        queued = sum(1 for item in list(self.queue) if type(item) is tuple)
        return len(self._pending) + queued + self._spooled_steps

    # -- writer thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self.wake.wait(self._delay())
            self.wake.clear()
            try:
                self._cycle()
                self._errors = 0
            except BaseException as exc:
                self._errors += 1
                logger.exception("sqltrack writer for %s failed", self.label)
                warn_once(
                    self.label,
                    "writer",
                    f"sqltrack: writing run {self.label} failed: {exc}; its rows are kept and "
                    "retried",
                )
                if self._errors >= _SPILL_AFTER_ERRORS:
                    self._spill()
            if self._stopping:
                if self._final and self._has_work():
                    self._drain()
                    self._spill()
                if self._final or not self._has_work():
                    self._end()
                    return

    def _delay(self) -> float:
        if self._errors:
            return float(min(_MAX_BACKOFF_S, 0.5 * 2 ** min(self._errors, 8)))
        if self._offline_since is not None:
            return self.flush_interval
        return min(self.flush_interval, self.heartbeat_interval)

    def _has_work(self) -> bool:
        return bool(self.queue or self._pending or self._ops or self._markers)

    def _end(self) -> None:
        if self._spool_id is not None:  # what is left stays there, for sqltrack sync
            self._spool_path = self._spool().path
            self._spool().detach(self.run_uuid)
            self._spool_id = None  # a later spill (a write after the end) starts anew
        self._prober.end()
        backend = self._backend
        if backend is None:
            return
        if self._offline_since is not None:
            with contextlib.suppress(SQLTrackError):
                backend.close()
            self._backend = None
        elif not self._has_work():  # all written: back to the tracker's pool for the next run
            backend.set_io_timeout(None)  # readers wait as long as it takes
            self._release_backend(backend)
            self._backend = None

    def _drain(self) -> None:
        pending = self._pending
        queue = self.queue
        while queue:
            item = queue.popleft()
            if type(item) is tuple:
                step, logged_at, values = item
                self._remember(step, values)
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
            elif type(item) is Marker:
                self._markers.append(item)
            else:
                self._ops.append(item)

    def _remember(self, step: int, values: dict[str, Any]) -> None:
        """Keep the values of the latest steps, and warn once per run when a value arrives for
        a key that already has a different one at that step (the later value wins)."""
        recent = self._recent
        seen = recent.get(step)
        if seen is None:
            if len(recent) >= _RECENT_STEPS:
                del recent[next(iter(recent))]
            recent[step] = {key: value for key, value in values.items() if value is not None}
            return
        for key, value in values.items():
            if value is None:
                continue
            old = seen.get(key)
            if old is not None and old != value and (old == old or value == value):  # NaN = NaN
                warn_once(
                    self.label,
                    "overwrite",
                    f"sqltrack: run {self.label}: {key!r} at step {step} was {old!r:.40} and is "
                    f"now {value!r:.40}; the later value is kept (log the other under another "
                    "key or at another step to keep both)",
                )
            seen[key] = value

    def _cycle(self) -> None:
        self._drain()
        if self._offline_since is not None:
            backend = self._prober.take()
            if backend is None:
                self._spill()
                return
            self._backend = backend
            backend.set_io_timeout(self.write_timeout)
        now = time.monotonic()
        heartbeat_due = now - self._last_beat >= self.heartbeat_interval
        if not (self._has_work() or heartbeat_due or self._spool_id is not None):
            return
        try:
            self._write(self._connection(), heartbeat_due)
        except DatabaseError as exc:
            if not self._is_disconnect(exc):
                raise
            self._go_offline(exc)
            self._spill()
            return
        if heartbeat_due:
            self._last_beat = now
        if self._offline_since is not None:
            self._back_online()
        if not self._pending:
            for marker in self._markers:
                marker.done.set()
            self._markers.clear()
        else:  # only values of a held column wait: a flush does not wait for another's lock
            self._release_markers()

    def _is_disconnect(self, exc: DatabaseError) -> bool:
        return isinstance(exc, DatabaseUnavailableError) or (
            self._backend is not None and self._backend.is_disconnect(exc)
        )

    def _connection(self) -> Backend:
        if self._backend is None:
            self._backend = self._open_backend()
            self._backend.set_io_timeout(self.write_timeout)
        return self._backend

    def _write(self, backend: Backend, heartbeat_due: bool) -> None:
        if self.run_id is None:  # the run started while its database was away
            self.run_id = self._ensure_run(backend)
        run_id = self.run_id
        if self._spool_id is not None or self._spool().left:
            self._replay(backend)
        if self._pending:
            steps = self._pending
            first, last = min(steps), max(steps)
            # Steps past the last one written here (or a first batch) most likely need no
            # merge: PostgreSQL then COPYs them at once, and merges only if that is refused.
            fresh = self._max_written is None or first > self._max_written
            # A batch beats only when a beat is due: the UPDATE of runs costs a statement (a
            # round trip on PostgreSQL) per batch otherwise.
            beat = time.time() if heartbeat_due else None
            self._pending = write_steps(
                backend,
                self._registry,
                run_id,
                steps,
                label=self.label,
                fresh=fresh,
                heartbeat=beat,
                hold=not self._final,  # at the end, a held column's values go to extra
            )
            if self._max_written is None or last > self._max_written:
                self._max_written = last
        elif heartbeat_due:
            backend.execute(
                backend.sql("UPDATE runs SET heartbeat_at = ? WHERE id = ?"),
                (backend.timestamp(time.time()), run_id),
            )
        self._run_ops(backend, run_id)

    def _run_ops(self, backend: Backend, run_id: int) -> None:
        while self._ops:
            op = self._ops[0]
            try:
                op.fn(backend, run_id)
            except DatabaseError as exc:
                if backend.is_disconnect(exc):
                    raise
                op.error = exc
            except Exception as exc:
                op.error = exc
            self._ops.pop(0)
            op.done.set()

    # -- offline: the spool and the probe ------------------------------------------------------

    def _go_offline(self, exc: BaseException) -> None:
        self._offline_since = time.monotonic()
        self._outage_steps = 0
        self._prober.start_over()
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()
        spool = self._spool()
        where = str(spool.path) if spool.path is not None else f"a new spool in {spool_dir()}"
        warn(
            f"sqltrack: lost the database ({exc}); run {self.label} goes on, and its "
            f"{len(self._pending)} unwritten steps and everything logged until the database "
            f"answers go to {where} every {self.flush_interval:g} s and are sent when it is back"
        )

    def _back_online(self) -> None:
        assert self._offline_since is not None
        down = time.monotonic() - self._offline_since
        self._offline_since = None
        warn(
            f"sqltrack: the database is back after {down:.1f} s; run {self.label} sent the "
            f"{self._outage_steps} steps it had spooled meanwhile"
        )
        self._outage_steps = 0

    def _spill(self) -> None:
        """Move everything waiting in memory into the spool (one fsync'd transaction a batch)."""
        if self._pending or self._ops:
            try:
                self._spill_to(self._spool())
            except Exception as exc:  # an unwritable cache dir, a full disk: keep it in memory
                logger.debug("sqltrack: could not spool run %s", self.label, exc_info=True)
                warn_once(
                    self.label,
                    "spool",
                    f"sqltrack: cannot write the spool ({exc}); run {self.label} keeps its "
                    "unsent steps in memory (set SQLTRACK_SPOOL_DIR to a writable directory)",
                )
        self._release_markers()

    def _spill_to(self, spool: Spool) -> None:
        with spool.lock:
            backend = spool.backend()
            if self._spool_id is None:
                self._spool_id = self._ensure_run(backend)
                spool.attach(self.run_uuid)
            count = len(self._pending)
            if self._pending:
                write_steps(
                    backend, spool.registry, self._spool_id, self._pending, label=self.label
                )
                self._pending = {}
            self._run_ops(backend, self._spool_id)
        self._spooled_steps += count
        self._outage_steps += count

    def _release_markers(self) -> None:
        """Release the flush requests that need not wait for the database (they return False)."""
        for marker in self._markers:
            if not marker.strict:
                marker.spooled = True
                marker.done.set()
        self._markers = [m for m in self._markers if m.strict]

    def _replay(self, backend: Backend) -> None:
        """Send this run's spooled rows and writes to `backend`, then remove them from the spool;
        runs of this process that ended while the database was away go first (they may be this
        run's parents). A new column held by a lock fails the replay at once (retried later):
        other writers of the process must not wait for the spool meanwhile."""
        spool = self._spool()
        with spool.lock:
            for path in list(spool.left):  # files of runs that ended while it was away
                self._send_left(path, backend)
                spool.left.remove(path)
            if self._spool_id is None:
                return
            uuids = [*spool.unattached_runs(), self.run_uuid]
            sent = sync.copy_runs(spool.backend(), backend, self._registry, uuids, held_wait=0.0)
            spool.forget_runs(uuids, sent.kept_links)
        self._spool_id = None
        self._spooled_steps = 0

    def _send_left(self, path: Path, backend: Backend) -> None:
        """Send a spool file this process left (unless ``sqltrack sync`` has it), then remove it."""
        lock = claim(path) if path.exists() else None
        if lock is None:
            return
        try:
            src = open_spool(path)
            try:
                sent = sync.copy_runs(src, backend, self._registry, held_wait=0.0)
                delete_runs(src, sent.runs, sent.kept_links)
                _, left = src.fetchall("SELECT count(*) FROM runs")
            finally:
                src.close()
            if left[0][0] == 0:
                remove_files(path)
        finally:
            lock.close()
