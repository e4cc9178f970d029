"""Runs: lifecycle with guarded status transitions, and the non-blocking `Run.log`."""

from __future__ import annotations

import atexit
import copy
import enum
import math
import os
import signal
import sys
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import _json, _spool
from ._warn import logger, warn_once
from .errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    MetricTypeError,
    NotFoundError,
    RunStateError,
)
from .writer import HEARTBEAT_INTERVAL_S, MetricWriter, Operation

if TYPE_CHECKING:
    from pathlib import Path

    from ._backends import Backend
    from .provenance import InferredLink, TensorFingerprint
    from .tracker import Tracker

__all__ = ["Run", "RunStatus"]

_MIN_INT64, _MAX_INT64 = -(2**63), 2**63 - 1
#: Value types `log` stores as they are (anything else, text too, goes through `_convert`).
_PLAIN_TYPES = frozenset((float, int, bool, type(None)))
_TOKEN_LINK_KINDS = ("resumed_from", "finetuned_from")


class RunStatus(str, enum.Enum):
    """Status of a run. `CRASHED` is never stored: readers report it for a stale heartbeat."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def _convert(key: Any, value: Any) -> Any:
    """Slow path of `Run.log`: validate the key and convert the value (plain ones stay)."""
    if not isinstance(key, str) or not key:
        raise MetricTypeError(
            f"metric key {key!r} is a {type(key).__name__}; expected a non-empty str"
        )
    _json.check_metric_key(key)
    value = _json.scalar(value)
    if isinstance(value, str):
        _json.check_text(value, f"metric {key!r}", MetricTypeError)
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return _json.metric_json(value, repr(key))
    _json.metric_json(value, repr(key))  # raises MetricTypeError naming key and type
    raise AssertionError("unreachable")


def _check_step(step: Any) -> int:
    step = _json.scalar(step)
    if isinstance(step, bool) or not isinstance(step, int):
        raise MetricTypeError(f"step {step!r} is a {type(step).__name__}; expected an int")
    if not _MIN_INT64 <= step <= _MAX_INT64:
        raise MetricTypeError(f"step {step!r} is out of range; expected a 64-bit integer")
    return int(step)


class Run:
    """One tracked run: log metrics, params, tags and links; finish with a status.

    Example::

        with tracker.start_run("mnist", params={"lr": 1e-3}) as run:
            run.log({"train/loss": 0.25}, step=1)
    """

    def __init__(
        self,
        tracker: Tracker,
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
        self.name = name
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
        _register(self)
        # Start beating now, not at the first log(): setup before it may take minutes. A
        # process forked later (DataLoader workers) drops this thread; see _after_fork_in_child.
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
        return self._tracker._insert_run(
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
    def tracker(self) -> Tracker:
        return self._tracker

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
                values = {k: _convert(k, v) for k, v in metrics.items()}
                known.update(k for k in values if type(k) is str)
                break
        if step is None:
            step = self._next_step
        elif type(step) is not int or not _MIN_INT64 <= step <= _MAX_INT64:
            step = _check_step(step)
        timestamp = time.time() if timestamp is None else _check_timestamp(timestamp)
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

    def stop_writer(self, timeout: float | None = None) -> bool:
        """Write what waits, then end this run's background thread; the run stays open and the
        next ``log()`` starts a new thread. For owners that must leave no thread behind without
        ending the run (a logger that is dropped unfinished, a test harness). False if the
        database did not take everything within `timeout` (default ``finish_timeout``): the
        rest is then in the spool."""
        wait = self._tracker.options.finish_timeout if timeout is None else timeout
        return self._writer.close(wait)

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
        self._write_tags(_check_tags(tags))

    def add_tags(self, *tags: str) -> None:
        """Add tags, keeping the existing ones and their order."""
        new = list(self.tags)
        for tag in _check_tags(tags):
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
        to_uuid = self._tracker._run_uuid(other)
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
        _unregister(self)
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
        status = _status_for(exc)
        try:
            self.finish(status)
        except Exception:
            if exc is None:
                raise
            # Never replace the user's exception with a cleanup failure.
            logger.exception("sqltrack: could not finish run %s", self.id)

    def _after_fork(self) -> None:
        self._state_lock = threading.RLock()
        self._writer.forget_after_fork()

    # -- provenance (issue 3; the design is in sqltrack_core/provenance.py) -------------------

    def register_checkpoint(
        self,
        path: str | os.PathLike[str] | None,
        state_dict: Mapping[str, Any] | None,
        step: int | None,
        *,
        kind: str = "checkpoint",
        sample_above: int | None = None,
    ) -> dict[str, Any]:
        """Register a checkpoint of this run; return the token to embed in it.

        The tensors of `state_dict` are fingerprinted here, on the caller's thread, and written
        in the background after the metrics logged before: this never waits for the database.
        `kind` is 'checkpoint' or 'final'; `sample_above` must match the other runs' (see
        `provenance.fingerprint_state_dict`).

        Example::

            token = run.register_checkpoint("ckpt.pt", model.state_dict(), step=100)
            torch.save({"model": model.state_dict(), "sqltrack": token}, "ckpt.pt")

        A run that has finished can still register (weights saved after training): then the
        write is made before this returns.

        Raises:
            ConfigurationError: a bad `kind`, `path` or `state_dict`.
        """
        from . import provenance

        provenance.check_kind(kind)
        checked_step = None if step is None else _check_step(step)
        text_path = None if path is None else os.fspath(path)
        if text_path is not None and not isinstance(text_path, str):
            raise ConfigurationError(f"checkpoint path {path!r} must be a str or os.PathLike[str]")
        fingerprints = (
            []
            if state_dict is None
            else provenance.fingerprint_state_dict(state_dict, sample_above=sample_above)
        )
        token = provenance.checkpoint_token(self.uuid, uuid_module.uuid4(), checked_step)
        self._submit_checkpoint(token, text_path, kind, fingerprints)
        return token

    def checkpoint_removed(self, path: str | os.PathLike[str]) -> None:
        """Record that the checkpoint file (or folder) at `path`, registered by this run, was
        deleted: Lightning's ``save_top_k`` and Hugging Face's ``save_total_limit`` rotate old
        ones away. Its rows in ``checkpoints`` get ``removed_at``; they and their fingerprints
        stay, so the links made through them stay explained. Paths compare as registered.

        Raises:
            ConfigurationError: `path` is not a str or os.PathLike[str].
        """
        text_path = path if isinstance(path, str) else getattr(path, "__fspath__", lambda: None)()
        if not isinstance(text_path, str):
            raise ConfigurationError(f"checkpoint path {path!r} must be a str or os.PathLike[str]")
        removed_at = time.time()

        def write(b: Backend, run_id: int) -> None:
            b.execute(
                b.sql(
                    "UPDATE checkpoints SET removed_at = ? "
                    "WHERE run_id = ? AND path = ? AND removed_at IS NULL"
                ),
                (b.timestamp(removed_at), run_id, text_path),
            )

        if self._status is RunStatus.RUNNING:
            self._writer.submit(Operation(write))
        else:
            self._write(write)

    def _submit_checkpoint(
        self,
        token: Mapping[str, Any],
        path: str | None,
        kind: str,
        fingerprints: Sequence[TensorFingerprint],
    ) -> None:
        """Register an already fingerprinted checkpoint (see register_checkpoint)."""
        from . import provenance

        stored = dict(token)

        def write(b: Backend, run_id: int) -> None:
            try:
                provenance.write_checkpoint(
                    b, run_id=run_id, token=stored, path=path, kind=kind, fingerprints=fingerprints
                )
            except DatabaseError as exc:
                if not b.is_disconnect(exc):  # a disconnect is retried by the writer
                    warn_once(
                        f"run:{self.uuid}",
                        "checkpoint",
                        f"sqltrack: could not register checkpoint {path!r} of run {self.id}: {exc}",
                    )
                raise

        if self._status is RunStatus.RUNNING:
            self._writer.submit(Operation(write))
        else:
            self._write(write)

    def link_from_weights(
        self,
        state_dict: Mapping[str, Any],
        *,
        sample_above: int | None = None,
        resumed: bool = False,
        infer: bool = True,
    ) -> list[InferredLink]:
        """Record `state_dict` as this run's initial weights and link the runs they came from.

        Call it once the model holds the weights it starts from. Each fingerprinted tensor is
        credited to the earliest other run that produced (changed) it; a run credited with at
        least half of the elements becomes ``finetuned_from`` (``resumed_from`` if `resumed`:
        the optimizer and loop state were restored too), any other ``initialized_from``, with
        the fraction in the link's evidence. Fresh weights link nothing. With ``infer=False``
        the weights are only recorded, for a caller that knows the parent from a token. Unlike
        the other writes this waits: it reads the registry.

        Example::

            model.load_state_dict(torch.load("base.pt", weights_only=True)["model"])
            links = run.link_from_weights(model.state_dict())  # [InferredLink('finetuned_from', ...)]

        Raises:
            ConfigurationError: `state_dict` is not a mapping.
            DatabaseError: the registry could not be read.
        """
        from . import provenance

        fingerprints = provenance.fingerprint_state_dict(state_dict, sample_above=sample_above)
        return self._link_from_fingerprints(fingerprints, resumed=resumed, infer=infer)

    def _link_from_fingerprints(
        self, fingerprints: Sequence[TensorFingerprint], *, resumed: bool, infer: bool
    ) -> list[InferredLink]:
        from . import provenance

        token = provenance.checkpoint_token(self.uuid, uuid_module.uuid4(), None)
        self._write(
            lambda b, run_id: provenance.write_checkpoint(
                b, run_id=run_id, token=token, path=None, kind="initial", fingerprints=fingerprints
            )
        )
        if not infer:
            return []
        tracker = self._tracker
        try:
            if self.id is None or self._writer.offline:
                raise DatabaseUnavailableError(f"run {self.uuid} has not reached its database")
            with tracker._lock:
                links = provenance.infer_links(tracker.backend, self.id, fingerprints)
        except DatabaseUnavailableError:
            # The registry is in the database: match once it answers, after these weights
            # are written (in order, by the writer, or by `sqltrack sync` from the spool).
            def deferred(b: Backend, run_id: int) -> None:
                if _spool.is_spool(b):
                    _spool.defer_inference(b, str(self.uuid), token["checkpoint_uuid"], resumed)
                else:
                    provenance.infer_and_link(b, run_id, fingerprints, resumed=resumed)

            self._write(deferred)
            return []
        links = provenance.resumed_kind(links, resumed)
        for link in links:
            self.link(link.kind, link.run_uuid, link.evidence)
        return links

    def link_from_token(
        self,
        token: Mapping[str, Any],
        *,
        kind: str = "resumed_from",
        path: str | os.PathLike[str] | None = None,
    ) -> InferredLink:
        """Link the run that wrote the checkpoint `token` (as `register_checkpoint` returned it).

        `kind` is 'resumed_from' (optimizer and loop state restored) or 'finetuned_from'.

        Raises:
            ConfigurationError: `token` is not a checkpoint token, or a bad `kind`.
            NotFoundError: the token's run is not in this database.
        """
        from . import provenance

        parsed = provenance.read_token(token)
        if parsed is None:
            raise ConfigurationError(
                f"token {token!r:.120} is not a sqltrack checkpoint token; expected "
                "{'run_uuid': ..., 'checkpoint_uuid': ..., 'step': ...} from register_checkpoint()"
            )
        if kind not in _TOKEN_LINK_KINDS:
            raise ConfigurationError(
                f"link kind {kind!r} is not one of {', '.join(map(repr, _TOKEN_LINK_KINDS))}"
            )
        try:
            to_id: int | None = self._tracker._run_id(parsed["run_uuid"])
        except DatabaseUnavailableError:
            to_id = None  # linked by UUID when the database answers
        evidence = {
            "method": "token",
            "checkpoint_uuid": parsed["checkpoint_uuid"],
            "step": parsed["step"],
            "path": None if path is None else os.fspath(path),
        }
        self.link(kind, parsed["run_uuid"], evidence)
        return provenance.InferredLink(kind, to_id, parsed["run_uuid"], evidence)


def _check_timestamp(timestamp: Any) -> float:
    if (
        isinstance(timestamp, (int, float))
        and not isinstance(timestamp, bool)
        and math.isfinite(timestamp)
    ):
        return float(timestamp)
    raise MetricTypeError(f"timestamp {timestamp!r} must be a finite number of epoch seconds")


def _status_for(exc: BaseException | None) -> RunStatus:
    if exc is None:
        return RunStatus.COMPLETED
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.CANCELLED
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return RunStatus.COMPLETED
    return RunStatus.FAILED


def _check_description(
    experiment: object, name: object, comment: object, tags: Iterable[str] | None
) -> list[str]:
    """Check what describes a run (as `Tracker.start_run` takes it); return the tags, deduplicated.

    Raises:
        ConfigurationError: naming the bad value.
    """
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigurationError(f"experiment {experiment!r} must be a non-empty str")
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"run name {name!r} is a {type(name).__name__}; expected a str")
    if comment is not None and not isinstance(comment, str):
        raise ConfigurationError(
            f"comment {comment!r:.80} is a {type(comment).__name__}; expected a str"
        )
    for what, text in (("experiment", experiment), ("run name", name), ("comment", comment)):
        if text is not None:
            _json.check_text(text, what, ConfigurationError)
    return _check_tags(tags or [])


def _check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise ConfigurationError(
            f"tags {tags!r} is a str; expected a list of str such as [{tags!r}]"
        )
    checked = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(
                f"tag {tag!r} is a {type(tag).__name__}; expected a non-empty str"
            )
        _json.check_text(tag, "tag", ConfigurationError)
        if tag not in checked:
            checked.append(tag)
    return checked


# -- process-wide: active runs, SIGTERM, interpreter exit, fork -------------------------------

_active: dict[int, Run] = {}
_active_lock = threading.RLock()
_previous_sigterm: Any = None
_sigterm_installed = False
_in_sigterm = False
#: SIGTERM gives a process a grace period (Slurm's and Kubernetes' default is 30 s): the runs
#: of this process together wait at most this long for their database, then spool.
SIGTERM_FINISH_S = 5.0
_exit_code: list[Any] = []  # the code sys.exit() was last called with


def _register(run: Run) -> None:
    global _previous_sigterm, _sigterm_installed
    with _active_lock:
        _active[id(run)] = run
        _watch_sys_exit()
        if _sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is _on_sigterm:
            # Still ours (a fork, or a run that ended while a later handler sat on top of
            # ours): the handler before ours is the one recorded then. Recording ourselves as
            # "previous" would make SIGTERM call us again and again.
            _sigterm_installed = True
            return
        if previous is signal.SIG_IGN or previous is None:
            return  # ignored, or set outside Python: leave it alone
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            return
        _previous_sigterm, _sigterm_installed = previous, True


def active_runs() -> list[Run]:
    """The runs of this process that have not finished."""
    with _active_lock:
        return list(_active.values())


def _unregister(run: Run) -> None:
    global _sigterm_installed
    with _active_lock:
        _active.pop(id(run), None)
        if _active or not _sigterm_installed:
            return
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, _previous_sigterm)
            _sigterm_installed = False


def _finish_all(status: RunStatus, seconds: float) -> None:
    """Finish every active run as `status`, all of them within `seconds` together."""
    deadline = time.monotonic() + seconds
    for run in active_runs():
        try:
            run.finish(status, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            logger.exception("sqltrack: could not finish run %s", run.uuid)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _in_sigterm
    if _in_sigterm:
        return  # a handler we passed the signal on to calls us back: we are ending already
    _in_sigterm = True
    try:
        previous = _previous_sigterm
        if previous is _on_sigterm or previous is None:
            previous = signal.SIG_DFL
        # A handler installed after ours that calls it (Lightning's does) owns the process's
        # fate: it stops training gracefully, so do not kill the process under it. (Asked
        # before the runs finish: the last one to finish puts the previous handler back.)
        composed = signal.getsignal(signal.SIGTERM) not in (_on_sigterm, previous)
        options = [run.tracker.options.finish_timeout for run in active_runs()]
        _finish_all(RunStatus.CANCELLED, min([SIGTERM_FINISH_S, *options]))
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and not composed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)  # die as the default action would
    finally:
        _in_sigterm = False


def _watch_sys_exit() -> None:
    """Remember the code `sys.exit` is called with, so that runs still open at exit end as
    failed after ``sys.exit(3)`` (an atexit hook cannot see the exit code otherwise). The
    program's exit code is never changed."""
    current = sys.exit
    if getattr(current, "__sqltrack__", False):
        return

    def exit(status: Any = None) -> Any:
        _exit_code[:] = [status]
        return current(status)

    exit.__sqltrack__ = True  # type: ignore[attr-defined]
    exit.__doc__ = current.__doc__
    sys.exit = exit


def _exit_status() -> RunStatus:
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if exc is None and _exit_code:
        exc = SystemExit(_exit_code[0])
    return _status_for(exc)


@atexit.register
def _finish_at_exit() -> None:
    """Finish runs nobody finished: failed after an uncaught exception or ``sys.exit(n)`` with
    n != 0, cancelled after Ctrl-C; all of them within one `finish_timeout` together."""
    runs = active_runs()
    if not runs:
        return
    _finish_all(_exit_status(), max(run.tracker.options.finish_timeout for run in runs))


def _after_fork_in_child() -> None:
    # A forked child (e.g. a DataLoader worker) must never write through, or close, the
    # parent's connections, nor finish the parent's runs at its exit. Its runs keep working:
    # a later log() opens a connection of the child's own. Our SIGTERM handler stays installed
    # (signal dispositions survive fork) and so does the handler recorded before it.
    global _active_lock, _in_sigterm
    _active_lock = threading.RLock()
    for run in list(_active.values()):
        run._after_fork()
    _active.clear()
    _in_sigterm = False
    _spool.after_fork_in_child()
