"""Runs: lifecycle with guarded status transitions, and the non-blocking `Run.log`."""

from __future__ import annotations

import copy
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _json, _process, _rows, _spool
from ._checks import (
    MAX_INT64,
    MIN_INT64,
    check_description,
    check_step,
    check_tags,
    check_timestamp,
    convert,
)
from ._process import active_runs
from ._run_provenance import RunProvenance
from ._status import RunStatus, status_for
from ._warn import logger, warn_once
from .errors import (
    ConfigurationError,
    MetricTypeError,
    NotFoundError,
    RunStateError,
)
from .writer import HEARTBEAT_INTERVAL_S, MetricWriter, Operation

if TYPE_CHECKING:
    from pathlib import Path

    from ._backends import Backend
    from ._host import RunHost

__all__ = ["Run", "RunStatus", "active_runs"]

#: Value types `log` stores as they are (anything else, text too, goes through `convert`).
_PLAIN_TYPES = frozenset((float, int, bool, type(None)))


class Run(RunProvenance):
    """One tracked run: log metrics, params, tags and links; finish with a status.

    Example::

        with tracker.start_run("mnist", params={"lr": 1e-3}) as run:
            run.log({"train/loss": 0.25}, step=1)
    """

    def __init__(
        self,
        tracker: RunHost,
        *,
        id: int | None,
        uuid: uuid_module.UUID,
        experiment: str,
        name: str | None,
        params: dict[str, Any],
        tags: list[str],
        comment: str | None,
        env: dict[str, Any] | None = None,
        started_at: float | None = None,
        reopen: bool = False,
    ) -> None:
        self.uuid = uuid
        self._reopen = reopen  # continued while its database was away: reopen it on arrival
        self.experiment = experiment
        self._name = name
        self.params = params
        self.tags = tags
        self._comment = comment
        self._env = env or {}
        self._started_at = time.time() if started_at is None else started_at
        self._ended_at: float | None = None
        self._tracker = tracker
        self._status = RunStatus.RUNNING
        self._state_lock = threading.RLock()  # an RLock: SIGTERM's handler may re-enter it
        self._next_step = 0
        self._known_keys: set[str] = set()  # keys log() has checked already
        options = tracker.options
        self._writer = MetricWriter(
            str(uuid),
            id,
            self._create_in,
            tracker._open_backend,
            tracker._release_backend,
            tracker.registry,
            lambda: _spool.spool_for(tracker._open_url),
            label=f"{experiment}/{name or uuid}",
            offline=id is None,  # started while its database was away (start_run warned)
            write_timeout=options.write_timeout,
            flush_interval=options.flush_interval,
            max_pending=options.max_pending,
            # beat well within stale_after, so a healthy run never reads as crashed
            heartbeat_interval=min(HEARTBEAT_INTERVAL_S, options.stale_after / 3),
        )
        self._queue = self._writer.queue
        self._max_pending = options.max_pending
        _process.register(self)
        # Start beating now, not at the first log(): setup before it may take minutes. A
        # process forked later (DataLoader workers) drops this thread (`_process`).
        self._writer.ensure_started()

    def __repr__(self) -> str:
        return (
            f"<Run id={self.id} uuid={self.uuid} {self.experiment}/{self.name} {self.status.value}>"
        )

    @property
    def id(self) -> int | None:
        """The run's integer id in its database; None until the run reaches it (a run started
        while the database was away gets its id when the database answers)."""
        return self._writer.run_id

    def _create_in(self, b: Backend) -> int:
        """Create this run's row in `b` (its database, or a spool) unless there; return its id."""
        return _rows.insert_run(
            b,
            uuid=self.uuid,
            experiment=self.experiment,
            name=self.name,
            params=self.params,
            env=self._env,
            tags=self.tags,
            comment=self._comment,
            started_at=self._started_at,
            status=self._status.value,
            ended_at=self._ended_at,
            reopen=self._reopen,
        )

    @property
    def status(self) -> RunStatus:
        """The run's status as this process knows it."""
        return self._status

    @property
    def tracker(self) -> RunHost:
        """The `Tracker` that made this run (typed as the part of it a run uses)."""
        return self._tracker

    @property
    def finish_timeout(self) -> float:
        """How long `finish` waits for the database by default (the tracker's option)."""
        return self._tracker.options.finish_timeout

    @property
    def next_step(self) -> int:
        """The step `log` without a step uses next: one past the highest step logged (or
        stored, for a continued run); 0 for a run that logged nothing."""
        return self._next_step

    # -- metrics ------------------------------------------------------------------------------

    def log(
        self, metrics: Mapping[str, Any], step: int | None = None, *, timestamp: float | None = None
    ) -> None:
        """Record `metrics` at `step` (default: one past the last step); never waits for the DB.

        `timestamp` (epoch seconds, default now) is the row's ``logged_at``, for values recorded
        earlier and written late.

        Raises:
            MetricTypeError: a key is not a non-empty str, or a value is not loggable.
            RunStateError: the run has finished.
        """
        if self._status is not RunStatus.RUNNING:
            raise RunStateError(f"run {self.id} is {self._status.value}; log() needs a running run")
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise MetricTypeError(
                f"metrics {metrics!r:.80} is a {type(metrics).__name__}; expected a dict "
                "such as {'train/loss': 0.25}"
            )
        values = dict(metrics)  # a copy: the caller may change its dict after this returns
        known = self._known_keys
        for key, value in values.items():
            if type(value) not in _PLAIN_TYPES or key not in known:
                values = {k: convert(k, v) for k, v in metrics.items()}
                known.update(k for k in values if type(k) is str)
                break
        if step is None:
            step = self._next_step
        elif type(step) is not int or not MIN_INT64 <= step <= MAX_INT64:
            step = check_step(step)
        timestamp = time.time() if timestamp is None else check_timestamp(timestamp)
        if step >= self._next_step:
            self._next_step = step + 1
        queue = self._queue
        queue.append((step, timestamp, values))
        if len(queue) == 1 or len(queue) >= self._max_pending:
            self._writer.ensure_started()
            if len(queue) >= self._max_pending:
                self._writer.wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged so far is written; False if `timeout` ran out, or if
        the database is away (then it returns once everything is safe in the spool)."""
        if self._status.is_terminal:  # finish() stopped the writer: never start it again
            return self._writer.unwritten == 0
        return self._writer.flush(timeout)

    def stop_writer(self, timeout: float | None = None, *, wait: bool = True) -> bool:
        """Write what waits, then end this run's background thread; the run stays open and the
        next ``log()`` starts a new thread. For owners that must leave no thread behind without
        ending the run (a logger that is dropped unfinished, a test harness). False if the
        database did not take everything within `timeout` (default ``finish_timeout``): the
        rest is then in the spool. With ``wait=False`` the thread is asked to end once what
        waits is written and this returns False at once (for finalizers, which may run on any
        thread, the writer's own included)."""
        if not wait:  # a finalizer, maybe on the writer thread itself: never block
            self._writer.request_stop()
            return False
        return self._writer.close(
            self._tracker.options.finish_timeout if timeout is None else timeout
        )

    # -- metadata -----------------------------------------------------------------------------

    def _write(self, fn: Callable[[Backend, int], None]) -> None:
        """Run a metadata write on the writer thread, after the metrics logged before it.

        ``fn(backend, run_id)`` gets the database that holds the run now and the run's id there.
        Waits a little so that errors surface here; while the database is away it does not
        wait: the write goes to the spool with the rows and is made when it returns.
        """
        operation = Operation(fn)
        writer = self._writer
        writer.submit(operation)
        offline = writer.offline
        done = not offline and operation.done.wait(self._tracker.options.metadata_timeout)
        if self._status.is_terminal:
            # A write after finish(): stop the writer again; what the database did not take
            # goes to the spool.
            writer.close(self._tracker.options.finish_timeout if done else 0.0)
        if not done:
            if not offline:
                warn_once(
                    f"run:{self.uuid}",
                    "metadata-pending",
                    f"sqltrack: the database did not answer in time; run {self.uuid}'s update "
                    "is queued and will be written when it returns",
                )
            return
        if operation.error is not None:
            raise operation.error

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge `params` (nested dicts merge key by key) into the run's params."""
        if not isinstance(params, Mapping):
            raise ConfigurationError(
                f"params {params!r:.80} is a {type(params).__name__}; expected a dict"
            )
        merged = copy.deepcopy(self.params)
        _json.deep_merge(merged, _json.jsonable(params))
        text = _json.dumps(merged)
        self._write(
            lambda b, run_id: b.execute(
                b.sql("UPDATE runs SET params = ? WHERE id = ?"), (b.json_param(text), run_id)
            )
        )
        self.params = merged  # only once written (or queued): a refused call changes nothing

    def set_tags(self, tags: Iterable[str]) -> None:
        """Replace the run's tags."""
        self._write_tags(check_tags(tags))

    def add_tags(self, *tags: str) -> None:
        """Add tags, keeping the existing ones and their order."""
        new = list(self.tags)
        for tag in check_tags(tags):
            if tag not in new:
                new.append(tag)
        self._write_tags(new)

    def _write_tags(self, tags: list[str]) -> None:
        text = _json.dumps(tags)
        self._write(
            lambda b, run_id: b.execute(
                b.sql("UPDATE runs SET tags = ? WHERE id = ?"), (b.json_param(text), run_id)
            )
        )
        self.tags = tags

    @property
    def name(self) -> str | None:
        """The run's name; assigning it writes it (``run.name = "lr3e-4"``), in order with
        what was logged before, also while the database is away or after the run ended."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        check_description(self.experiment, name, None, None)
        self._write(
            lambda b, run_id: b.execute(
                b.sql("UPDATE runs SET name = ? WHERE id = ?"), (name, run_id)
            )
        )
        self._name = name  # only once written (or queued): a refused name changes nothing

    @property
    def comment(self) -> str | None:
        """A free-text comment; assigning it writes it."""
        return self._comment

    @comment.setter
    def comment(self, text: str | None) -> None:
        if text is not None and not isinstance(text, str):
            raise ConfigurationError(
                f"comment {text!r:.80} is a {type(text).__name__}; expected a str or None"
            )
        if text is not None:
            _json.check_text(text, "comment", ConfigurationError)
        self._write(
            lambda b, run_id: b.execute(
                b.sql("UPDATE runs SET comment = ? WHERE id = ?"), (text, run_id)
            )
        )
        self._comment = text

    def link(
        self,
        kind: str,
        other: Run | int | str | uuid_module.UUID,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that this run relates to `other` (``run.link("finetuned_from", base)``)."""
        if not isinstance(kind, str) or not kind.strip():
            raise ConfigurationError(
                f"link kind {kind!r} must be a non-empty str such as 'finetuned_from'"
            )
        _json.check_text(kind, "link kind", ConfigurationError)
        to_uuid = self._tracker.run_uuid(other)
        if to_uuid == str(self.uuid):
            raise ConfigurationError(f"run {self.id} cannot be linked to itself")
        text = _json.dumps(_json.jsonable(dict(evidence or {}), what="evidence"))

        def write(b: Backend, run_id: int) -> None:
            _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (to_uuid,))
            if not rows:
                if _spool.is_spool(b):  # the other run is in the database, not in the spool
                    _spool.add_link(b, str(self.uuid), kind, to_uuid, text)
                    return
                raise NotFoundError(f"no run {to_uuid!r} to link run {run_id} to")
            b.execute(
                b.sql(
                    "INSERT INTO run_links (from_run_id, kind, to_run_id, evidence) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (from_run_id, kind, to_run_id) DO UPDATE SET evidence = excluded.evidence"
                ),
                (run_id, kind, rows[0][0], b.json_param(text)),
            )

        self._write(write)

    # -- lifecycle ----------------------------------------------------------------------------

    def finish(
        self, status: RunStatus | str = RunStatus.COMPLETED, *, timeout: float | None = None
    ) -> None:
        """Flush and end the run with `status`; calling it again with the same status is a no-op.

        Raises:
            RunStateError: the run already ended with another status, or `status` is not final.
        """
        try:
            target = RunStatus(status)
        except ValueError:
            raise ConfigurationError(
                f"status {status!r} is not one of 'completed', 'failed', 'cancelled'"
            ) from None
        if not target.is_terminal:
            raise RunStateError(
                f"a run can only finish as completed, failed or cancelled, not {target.value!r}"
            )
        with self._state_lock:
            if self._status is target:
                return
            if self._status is not RunStatus.RUNNING:
                raise RunStateError(
                    f"run {self.id} already ended as {self._status.value}; cannot change it to {target.value}"
                )
            self._status = target
        _process.unregister(self)
        ended = self._ended_at = time.time()

        def write(b: Backend, run_id: int) -> None:
            stamp = b.timestamp(ended)
            b.execute(
                b.sql("UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ? WHERE id = ?"),
                (target.value, stamp, stamp, run_id),
            )

        self._writer.submit(Operation(write))
        wait = self._tracker.options.finish_timeout if timeout is None else timeout
        if not self._writer.close(wait):
            self._report_spooled(target, wait)

    def _report_spooled(self, target: RunStatus, waited: float) -> None:
        """Say, in one line, where a run that could not reach its database was left."""
        path = self._writer.spool_path
        if path is None:
            logger.warning(
                "sqltrack: run %s ended as %s, but %s steps could not be written or spooled",
                self.uuid,
                target.value,
                self._writer.unwritten,
            )
            return
        logger.warning(
            "sqltrack: run %s ended as %s while its database was unreachable (waited %.0f s); "
            "its unsent data is in the spool %s; send it with: sqltrack sync",
            self.uuid,
            target.value,
            waited,
            path,
        )

    @property
    def spool_path(self) -> Path | None:
        """The spool file holding this run's unsent data, or None if nothing waits there."""
        return self._writer.spool_path

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not RunStatus.RUNNING:
            return
        status = status_for(exc)
        try:
            self.finish(status)
        except Exception:
            if exc is None:
                raise
            # Never replace the user's exception with a cleanup failure.
            logger.exception("sqltrack: could not finish run %s", self.id)

    def forget_after_fork(self) -> None:
        self._state_lock = threading.RLock()
        self._writer.forget_after_fork()

    # -- provenance (issue 3; the design is in sqltrack_core/provenance.py) -------------------
