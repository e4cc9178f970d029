"""What every framework integration needs from a run, whatever the framework.

A `RunSession` is the run of one logger or callback: its UUID is made up front (frameworks
want a run name before anything touches the database) and the run is started on first use.
While the database cannot be reached the core's own offline path keeps everything (the run
starts offline, its writer spools to disk and replays when the database answers): a session
keeps no copy of its own. Training never stops for tracking: database trouble warns once and
goes on; only bad input the user gave raises.
It pickles without its connections and threads (for frameworks that spawn processes), and its
copies go on in the same run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqltrack_core import Run, RunStatus, Tracker, connect, provenance
from sqltrack_core.errors import ConfigurationError, MetricTypeError, NotFoundError, SQLTrackError
from sqltrack_core.integration import check_description, database_url, warn_once

__all__ = ["RESUME_MODES", "RunSession", "TracksARun", "check_positive"]

_USER_ERRORS = (MetricTypeError, ConfigurationError, NotFoundError)
#: what a resume from another run's checkpoint does: a new run linked to it, or go on in it
RESUME_MODES = ("new", "continue")


def check_positive(name: str, value: object) -> None:
    """Refuse an optional count argument that is not a positive int, naming it."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigurationError(f"{name}={value!r} must be a positive int or None")


class RunSession:
    """One run seen from an integration; see the module docstring.

    Raises (in ``__init__``, at the call site): ConfigurationError or UnsupportedURLError for a
    bad argument.
    """

    def __init__(
        self,
        experiment: str | None,
        url: str | os.PathLike[str] | None = None,
        *,
        default_experiment: str,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        comment: str | None = None,
        resume: str = "new",
        run: int | str | uuid_module.UUID | None = None,
        sample_above: int | None = None,
    ) -> None:
        if experiment is None:
            experiment = os.environ.get("SQLTRACK_EXPERIMENT") or default_experiment
        self.tags = check_description(experiment, name, comment, tags)
        if resume not in RESUME_MODES:
            raise ConfigurationError(
                f"resume={resume!r} is not one of {', '.join(map(repr, RESUME_MODES))}"
            )
        if run is not None and (
            not isinstance(run, (int, str, uuid_module.UUID)) or isinstance(run, bool)
        ):
            raise ConfigurationError(
                f"run {run!r} is a {type(run).__name__}; expected a run id or UUID"
            )
        check_positive("sample_above", sample_above)
        self.url = database_url(url)  # a bad URL fails here, not mid-training
        self.experiment = experiment
        self.name = name
        self.comment = comment
        self.resume = resume
        self.sample_above = sample_above
        self.uuid = uuid_module.uuid4()
        self._continue: int | str | uuid_module.UUID | None = run
        if isinstance(run, uuid_module.UUID) or (isinstance(run, str) and not run.isdigit()):
            try:
                self.uuid = uuid_module.UUID(str(run))
            except ValueError:
                raise ConfigurationError(f"run {run!r} is neither a run id nor a UUID") from None
        self._created_at = time.time()
        self._created = False  # the run exists in the database (survives pickling)
        self._shared = False  # pickled: a copy in another process may make the run
        self._init_process_state()

    def _init_process_state(self) -> None:
        """State that belongs to one process: dropped when pickled."""
        self._lock = threading.RLock()
        self._tracker: Tracker | None = None
        self.run: Run | None = None
        self._found_id: int | None = None  # stored_id() of a run another process made
        self._training = False  # between begin_training() and end_training()

    _PICKLED = ("url", "experiment", "name", "tags", "comment", "resume", "sample_above", "uuid")

    def __getstate__(self) -> dict[str, Any]:
        self._shared = True  # a copy may make the run in another process (ddp_spawn)
        keep = (*self._PICKLED, "_continue", "_created_at", "_created", "_shared")
        return {key: self.__dict__[key] for key in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    # -- writing --------------------------------------------------------------------------------

    def log(
        self, metrics: Mapping[str, Any], step: int | None, timestamp: float | None = None
    ) -> None:
        """`Run.log` on the run, started (or reopened) first if needed."""
        run = self.run
        if run is not None and run.status is RunStatus.RUNNING:
            run.log(metrics, step, timestamp=timestamp)  # the hot path: no lock, no database
            return
        # Reopening a run needs its database; bad values the caller gave still raise.
        with self._lock, self.guard("log"):
            self.ensure_run(reopen=True).log(metrics, step, timestamp=timestamp)

    def log_after_end(self, metrics: Mapping[str, Any], step: int | None) -> None:
        """Log into a run that has finished (an evaluation after training), keeping its status."""
        with self._lock:
            run = self.run
            if run is None or run.status is RunStatus.RUNNING:
                self.log(metrics, step)
                return
            status = run.status
            run = self._reopen(run)
            run.log(metrics, step)
            run.finish(status)
            run.tracker.close()

    def do(self, cause: str, write: Callable[[Run], object], *, reopen: bool = True) -> None:
        """Apply `write` to the run (the core spools it while the database is away)."""
        with self.guard(cause), self._lock:
            write(self.ensure_run(reopen=reopen))

    def register_checkpoint(
        self,
        path: str | None,
        state_dict: Mapping[str, Any],
        step: int | None,
        kind: str = "checkpoint",
        token: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Fingerprint `state_dict` now; register it (never reopening the run); return the token.

        `token` is one made earlier with `next_token` (a carrier that had to be written first);
        by default a new one. Never raises for a database problem: the token is made here.
        """
        fingerprints = provenance.fingerprint_state_dict(state_dict, sample_above=self.sample_above)
        made = dict(token) if token is not None else self.next_token(step)
        made["step"] = step
        self.do(
            "checkpoint",
            lambda run: run.register_fingerprints(made, path, kind, fingerprints),
            reopen=False,  # weights saved after training do not reopen the run
        )
        return made

    def checkpoint_removed(self, path: str) -> None:
        """Record that a checkpoint this run registered was deleted (never reopening the run)."""
        self.do("checkpoint", lambda run: run.checkpoint_removed(path), reopen=False)

    def next_token(self, step: int | None = None) -> dict[str, Any]:
        """A token of this run for a checkpoint not saved yet."""
        return provenance.checkpoint_token(self.uuid, uuid_module.uuid4(), step)

    def link_initial_weights(
        self,
        state_dict: Mapping[str, Any],
        *,
        resumed: bool,
        token: Mapping[str, Any] | None = None,
        path: str | None = None,
    ) -> None:
        """Record the weights training starts from, and link where they came from: a resume
        with its checkpoint's `token` links ``resumed_from`` by token alone; otherwise the
        fingerprints decide, and a `token` of the checkpoint the weights were loaded from
        (Lightning's ``load_from_checkpoint``) makes the link to its run by token."""
        fingerprints = provenance.fingerprint_state_dict(state_dict, sample_above=self.sample_above)

        def write(run: Run) -> None:
            if token is not None and resumed:
                run.link_from_token(token, kind="resumed_from", path=path)
                run.link_from_fingerprints(fingerprints, resumed=True, infer=False)
            else:
                run.link_from_fingerprints(fingerprints, resumed=resumed, token=token)

        self.do("provenance", write)

    def finish(self, target: RunStatus) -> None:
        """Finish the run as `target` (reopening it if it ended otherwise), then give the
        connections back; while the database is away, what is left goes to the spool."""
        with self.guard("finish", strict=False):
            run = self.run
            if run is None:
                self._finish_unseen(target)
                return
            if run.status is not RunStatus.RUNNING and run.status is not target:
                if target is RunStatus.COMPLETED:
                    return  # a stage that logged nothing does not undo an earlier failure
                run = self._reopen(run)
            run.finish(target)
            run.tracker.close()  # a later stage, or a reader, connects again

    def begin_training(self) -> None:
        """Training began. If the process exits before `end_training`, the run failed
        (cancelled after Ctrl-C), even if the script caught the exception: for frameworks
        that tell callbacks nothing when training raises (Hugging Face, Keras). The exit hook
        holds this session, so it works however early the framework drops the callback."""
        self._training = True
        atexit.unregister(self._fail_unfinished)  # one hook per session
        atexit.register(self._fail_unfinished)  # runs before the core's own: atexit is LIFO

    def end_training(self) -> None:
        self._training = False
        atexit.unregister(self._fail_unfinished)  # the hook no longer keeps the session alive

    def _fail_unfinished(self) -> None:
        """At exit: unless finished otherwise already (SIGTERM cancels it at once)."""
        if not self._training:
            return
        run = self.run
        if run is not None and run.status is not RunStatus.RUNNING:
            return
        uncaught = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        interrupted = isinstance(uncaught, KeyboardInterrupt)
        self.finish(RunStatus.CANCELLED if interrupted else RunStatus.FAILED)

    def continue_from(self, token: Mapping[str, Any] | None) -> bool:
        """On a resume from the checkpoint with `token`: with ``resume="continue"`` and another
        run's token, log into that run from now on (the run made for this session is deleted if
        nothing was logged into it yet) and return True; else change nothing, return False."""
        if token is None or self.resume != "continue" or token["run_uuid"] == str(self.uuid):
            return False
        with self._lock:
            placeholder, self.run = self.run, None
            if placeholder is not None:
                placeholder.finish(RunStatus.CANCELLED)
                if placeholder.next_step == 0 and self._tracker is not None:
                    self._tracker.delete_run(placeholder)
            self._continue = token["run_uuid"]
            self.uuid = uuid_module.UUID(token["run_uuid"])
            self.ensure_run(reopen=True)
        return True

    @contextmanager
    def guard(self, cause: str, *, strict: bool = True) -> Iterator[None]:
        """Training never stops for tracking: warn once and go on. With `strict`, bad input the
        caller gave still raises; the framework's own calls are not strict."""
        try:
            yield
        except Exception as exc:
            if strict and isinstance(exc, _USER_ERRORS):
                raise
            warn_once(
                f"session:{self.uuid}",
                cause,
                f"sqltrack: {cause} of run {self.uuid} failed and is skipped: "
                f"{type(exc).__name__}: {exc}",
            )

    # -- the run, and life without a database ---------------------------------------------------

    def ensure_run(self, *, reopen: bool) -> Run:
        """The run, started on first use (offline if the database is away: the core spools it)."""
        with self._lock:
            run = self.run
            if run is not None:
                if reopen and run.status is not RunStatus.RUNNING:
                    run = self._reopen(run)
                return run
            if self._tracker is None:
                self._tracker = connect(self.url)
            return self._create_run(self._tracker)

    def _create_run(self, tracker: Tracker) -> Run:
        """Start (or continue) the run (under _lock)."""
        if self._continue is not None:  # (by UUID, it goes on offline while the database is away)
            run = tracker.continue_run(self._continue, experiment=self.experiment)
            self.uuid = run.uuid
        elif self._created:  # this session's run, made in another process
            run = tracker.continue_run(self.uuid, experiment=self.experiment)
        else:
            run = tracker.start_run(
                self.experiment,
                name=self.name,
                tags=self.tags,
                comment=self.comment,
                uuid=self.uuid,
                started_at=self._created_at,
            )
        self._created = True
        self._continue = None
        self.run = run
        self._adopt(run)
        return run

    def _adopt(self, run: Run) -> None:
        self.run = run
        # A logger or callback dropped without being finalized takes the writer thread along;
        # the run stays open (the core ends it at exit).
        weakref.finalize(self, _stop_writer, run).atexit = False

    def _reopen(self, run: Run) -> Run:
        if self._tracker is None:
            self._tracker = connect(self.url)
        self._adopt(self._tracker.continue_run(run.uuid))
        assert self.run is not None
        return self.run

    def stored_id(self) -> int | None:
        """The run's id in the database: this process's run's, or, for a session that was
        pickled and never made the run here (the parent of ``ddp_spawn`` children), looked up
        by UUID. None if there is none yet or the database cannot tell now."""
        run = self.run
        if run is not None:
            return run.id
        if self._found_id is None and self._shared:
            with contextlib.suppress(SQLTrackError), connect(self.url, migrate=False) as tracker:
                self._found_id = tracker.run_id(self.uuid)
        return self._found_id

    def _finish_unseen(self, target: RunStatus) -> None:
        """finish() on a copy that never made the run: the parent of spawned children."""
        if target is RunStatus.COMPLETED:
            return
        # a spawned child made the run and failed; only this copy hears of it
        tracker = self._tracker or connect(self.url)
        self._tracker = tracker
        try:
            status = tracker.run_info(self.uuid)["status"]
        except NotFoundError:
            return
        if status in ("running", "crashed"):
            tracker.continue_run(self.uuid).finish(target)
        tracker.close()


def _stop_writer(run: Run) -> None:
    if run.status is RunStatus.RUNNING:
        run.stop_writer(wait=False)  # a finalizer runs on whichever thread collected garbage


class TracksARun:
    """What the integrations' loggers and callbacks tell about their run (``self._session``)."""

    _session: RunSession

    @property
    def run_id(self) -> int | None:
        """The run's integer id, once it exists in the database (also in the parent process
        of ``ddp_spawn``, whose children made the run)."""
        return self._session.stored_id()

    @property
    def run_uuid(self) -> str:
        """The run's UUID (made before the run exists in the database)."""
        return str(self._session.uuid)
