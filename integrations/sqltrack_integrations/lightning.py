"""PyTorch Lightning logger for sqltrack-core, with provenance links from checkpoints.

``Trainer(logger=SQLTrackLogger("my-experiment"))`` is all a script needs: the run, its
hyperparameters, its metrics as typed columns (``epoch`` included), every checkpoint file the
Trainer writes, and links to the runs its starting weights came from.

How the pieces meet (the verified Lightning facts are in docs/design/lightning-integration.md):

- `SQLTrackLogger` creates its run lazily on rank 0, under a UUID it makes in ``__init__``; that
  UUID is the logger's ``version``, so default checkpoint paths carry it.
- `SQLTrackCallback` reaches every Trainer through the ``lightning.pytorch.callbacks_factory``
  entry point (and, failing that, `SQLTrackLogger.log_graph` adds it). It is a no-op without a
  `SQLTrackLogger`. At setup it wraps the strategy's CheckpointIO in `_TokenCheckpointIO`, which
  fingerprints and registers every checkpoint Lightning saves (``save_weights_only`` and
  ``last.ckpt`` included) and embeds the token, and which reads the token back on
  ``fit(ckpt_path=...)``. At fit start the module's weights are matched against the registry.
- A database that cannot be reached never stops training: the logger warns once, keeps what is
  logged in memory, retries in the background, and writes it all when the database answers.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lightning.fabric.loggers.logger import _DummyExperiment, rank_zero_experiment
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from sqltrack_core import Run, RunStatus, Tracker, _json, connect, provenance
from sqltrack_core._backends.base import check_scheme, mask_password, pin_url, resolve_url
from sqltrack_core._warn import logger as _log
from sqltrack_core._warn import warn_once
from sqltrack_core.errors import ConfigurationError, MetricTypeError, NotFoundError, SQLTrackError
from sqltrack_core.runs import _check_tags

__all__ = ["SQLTrackCallback", "SQLTrackLogger"]

#: Lightning's finalize() status -> the run's status. "finished" only comes from the SLURM
#: requeue handler: the job stops to be requeued, so the run is interrupted, not done.
_FINAL_STATUS = {
    "success": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "finished": RunStatus.CANCELLED,
}
_RESUME_MODES = ("new", "continue")
_TOKEN_KEY = "sqltrack"  # where the token lives in a Lightning checkpoint dict
_RETRY_FIRST_S, _RETRY_MAX_S = 1.0, 60.0
_MAX_BUFFERED_ROWS = 1_000_000  # metric rows kept in memory while the database is unreachable
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=+-]+")


class SQLTrackLogger(Logger):
    """Log a Lightning run to sqltrack-core (SQLite by default, or PostgreSQL).

    Args:
        experiment: the experiment the run belongs to; also the checkpoint folder's name.
        url: the database (``sqlite:///path.db``, ``postgresql://user@host/db``); default
            ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``.
        name: the run's name.
        tags, comment: stored with the run.
        resume: on ``trainer.fit(ckpt_path=...)`` from a checkpoint of another run, ``"new"``
            (default) starts a new run linked ``resumed_from`` it; ``"continue"`` goes on logging
            into that run, as a preempted job wants.
        run: continue this existing run (id or UUID) from the start; its UUID becomes
            ``version``, so checkpoints land in its folder again and ``ckpt_path="last"`` finds them.
        save_dir: root of the checkpoint folders; default the Trainer's ``default_root_dir``.
        sample_above: fingerprint only a sample of tensors with more elements than this (for
            very large models); every run that should link must use the same value.

    Example::

        trainer = Trainer(max_epochs=3, logger=SQLTrackLogger("mnist", name="baseline"))
        trainer.fit(model, datamodule)

    The run is created on rank 0 only, at the first thing logged. `experiment` is the
    `sqltrack_core.Run` (a no-op object on other ranks, and while the database is unreachable).
    """

    def __init__(
        self,
        experiment: str = "lightning_logs",
        url: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        comment: str | None = None,
        resume: str = "new",
        run: int | str | uuid_module.UUID | None = None,
        save_dir: str | os.PathLike[str] | None = None,
        sample_above: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(experiment, str) or not experiment.strip():
            raise ConfigurationError(f"experiment {experiment!r} must be a non-empty str")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(
                f"run name {name!r} is a {type(name).__name__}; expected a str"
            )
        if comment is not None and not isinstance(comment, str):
            raise ConfigurationError(
                f"comment {comment!r:.80} is a {type(comment).__name__}; expected a str"
            )
        if resume not in _RESUME_MODES:
            raise ConfigurationError(
                f"resume={resume!r} is not one of {', '.join(map(repr, _RESUME_MODES))}"
            )
        if run is not None and not isinstance(run, (int, str, uuid_module.UUID)):
            raise ConfigurationError(
                f"run {run!r} is a {type(run).__name__}; expected a run id or UUID"
            )
        if sample_above is not None and (
            not isinstance(sample_above, int) or isinstance(sample_above, bool) or sample_above < 1
        ):
            raise ConfigurationError(f"sample_above={sample_above!r} must be a positive int")
        self._url = pin_url(resolve_url(url))
        check_scheme(self._url)  # a bad URL fails here, at the call site, not mid-training
        self._experiment_name = experiment
        self._run_name = name
        self._tags = _check_tags(tags or [])
        self._comment = comment
        self._resume = resume
        self._save_dir = None if save_dir is None else os.fspath(save_dir)
        self._sample_above = sample_above
        self._uuid = uuid_module.uuid4()
        self._continue: int | str | uuid_module.UUID | None = run
        if isinstance(run, uuid_module.UUID) or (isinstance(run, str) and not run.isdigit()):
            try:
                self._uuid = uuid_module.UUID(str(run))
            except ValueError:
                raise ConfigurationError(f"run {run!r} is neither a run id nor a UUID") from None
        self._created_at = time.time()
        self._created = False  # the run exists in the database (survives pickling)
        self._init_process_state()

    def _init_process_state(self) -> None:
        """State that belongs to one process: dropped when pickled for ddp_spawn."""
        self._lock = threading.RLock()
        self._tracker: Tracker | None = None
        self._run: Run | None = None
        # while the database is unreachable: rows, and writes to replay once the run exists
        self._buffered: collections.deque[tuple[dict[str, Any], int | None, float]] = (
            collections.deque()
        )
        self._deferred: list[Callable[[Run], object]] = []
        self._offline = False
        self._dropped = 0
        self._retry: threading.Thread | None = None
        self._stop_retry = threading.Event()
        self._trainer: weakref.ReferenceType[Trainer] | None = None
        self._loaded: tuple[dict[str, Any] | None, str] | None = None  # token, path
        self._io_paths: set[str] = (
            set()
        )  # registered by _TokenCheckpointIO, for after_save_checkpoint
        self._fit_started = False
        self._interrupted = False
        self._final_status: RunStatus | None = None  # finalize() came while offline

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in (
            "_lock",
            "_tracker",
            "_run",
            "_buffered",
            "_deferred",
            "_offline",
            "_dropped",
            "_retry",
            "_stop_retry",
            "_trainer",
            "_loaded",
            "_io_paths",
            "_fit_started",
            "_interrupted",
            "_final_status",
        ):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    # -- Lightning's Logger interface ---------------------------------------------------------

    @property
    @override
    def name(self) -> str:
        """The experiment, made safe as a folder name (checkpoints go to ``name/version``)."""
        return _UNSAFE_PATH_CHARS.sub("_", self._experiment_name).strip("._") or "experiment"

    @property
    @override
    def version(self) -> str:
        """The run's UUID."""
        return str(self._uuid)

    @property
    @override
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    @override
    def log_dir(self) -> str:
        """``save_dir/name/version``: where default checkpoints go (in ``checkpoints/``)."""
        root = self._save_dir
        if root is None:
            trainer = self._trainer() if self._trainer is not None else None
            root = trainer.default_root_dir if trainer is not None else os.getcwd()
        return os.path.join(root, self.name, self.version)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `sqltrack_core.Run` (created on first use); a no-op stand-in on ranks other than
        0 and while the database cannot be reached."""
        run = self._ensure_run(reopen=False)
        return _DummyExperiment() if run is None else run

    @property
    def run_id(self) -> int | None:
        """The run's integer id, once it exists in the database."""
        run = self._run
        return None if run is None else run.id

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log `metrics` at Lightning's `step` (``epoch`` arrives here too and is a column)."""
        if not isinstance(metrics, Mapping):
            raise MetricTypeError(
                f"metrics {metrics!r:.80} is a {type(metrics).__name__}; expected a dict"
            )
        run = self._run
        if run is not None and run.status is RunStatus.RUNNING:
            run.log(metrics, step)  # the hot path: no lock, no database
            return
        with self._lock:
            run = self._ensure_run(reopen=True)
            if run is not None:
                run.log(metrics, step)
                return
            if len(self._buffered) >= _MAX_BUFFERED_ROWS:
                self._buffered.popleft()
                self._dropped += 1
            self._buffered.append((dict(metrics), step, time.time()))

    @override
    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Merge `params` (dicts, Namespaces, dataclasses, anything) into the run's params.

        Nested mappings stay nested; values JSON cannot hold are stored as their ``str()``.
        """
        if isinstance(params, argparse.Namespace):
            params = vars(params)
        plain = _json.jsonable(params)
        if not isinstance(plain, dict):
            raise ConfigurationError(
                f"hyperparameters {params!r:.80} are a {type(params).__name__}; expected a dict, "
                "Namespace or dataclass"
            )
        if plain:
            self._do("params", lambda run: run.log_params(plain))

    @override
    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Not a graph: Lightning calls this with the module after ``on_fit_start``, which is the
        fallback that installs `SQLTrackCallback` when the entry point is missing."""
        trainer = getattr(model, "_trainer", None)
        if not isinstance(trainer, Trainer) or any(
            isinstance(cb, SQLTrackCallback) for cb in _callbacks(trainer)
        ):
            return
        callback = SQLTrackCallback()
        _callbacks(trainer).append(callback)
        if trainer.state.fn == "fit" and self._first_sqltrack_logger(trainer):
            self._attach(trainer)
            self._on_fit_start(trainer, model)

    @override
    @rank_zero_only
    def save(self) -> None:
        """Nothing to do: rows are written in the background as they are logged."""

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: 'success' → completed, 'failed' → failed (cancelled after Ctrl-C or
        SIGTERM), 'finished' (SLURM requeue) → cancelled. A later stage of the same Trainer
        (``fit`` then ``test``) reopens the run and finalizes it again."""
        target = _FINAL_STATUS.get(status)
        if target is None:
            raise ConfigurationError(
                f"finalize status {status!r} is not one of {', '.join(map(repr, _FINAL_STATUS))}"
            )
        if target is RunStatus.FAILED and self._interrupted:
            target = RunStatus.CANCELLED
        self._interrupted = False
        with self._guard("finalize", strict=False):
            with self._lock:
                run = self._run
                if run is None and self._offline:
                    run = self._ensure_run(reopen=True, now=True)  # one last try, then keep trying
                if run is None and self._offline:
                    self._final_status = target  # applied when the retry thread gets through
            if run is None:
                self._finalize_unseen(target)
                return
            if run.status is not RunStatus.RUNNING and run.status is not target:
                if target is RunStatus.COMPLETED:
                    return  # a stage that logged nothing does not undo an earlier failure
                run = self._reopen(run)
            run.finish(target)
            # Give the connections back between stages; a later stage or a reader reconnects.
            run.tracker.close()

    @override
    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Register the file `checkpoint_callback` just wrote, if the CheckpointIO wrapper did not
        (FSDP and DeepSpeed save through their own IO): by the module's current weights."""
        path = getattr(checkpoint_callback, "_last_checkpoint_saved", None) or getattr(
            checkpoint_callback, "last_model_path", None
        )
        if not path:
            return
        path = _normal_path(path)
        if path in self._io_paths:
            self._io_paths.discard(path)
            return
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None or trainer.lightning_module is None:
            return
        self.register_checkpoint(path, trainer.lightning_module.state_dict(), trainer.global_step)

    # -- checkpoints and provenance -----------------------------------------------------------

    def register_checkpoint(
        self,
        path: str | None,
        state_dict: Mapping[str, Any],
        step: int | None,
        kind: str = "checkpoint",
    ) -> dict[str, Any]:
        """Fingerprint and register a checkpoint of this run; return the token to embed.

        The Trainer's checkpoints are registered without calling this; it is for files a script
        writes itself. Never raises for a database problem: the token is made locally.
        """
        fingerprints = provenance.fingerprint_state_dict(
            state_dict, sample_above=self._sample_above
        )
        token = provenance.checkpoint_token(self._uuid, uuid_module.uuid4(), step)
        self._do(
            "checkpoint",
            lambda run: run._submit_checkpoint(token, path, kind, fingerprints),
            reopen=False,  # a file saved after training does not reopen the run
        )
        return token

    def _attach(self, trainer: Trainer) -> None:
        """Called by the callback at setup (rank 0): wrap the CheckpointIO, reset per-fit state."""
        self._trainer = weakref.ref(trainer)
        self._loaded = None
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, _TokenCheckpointIO):
            strategy.checkpoint_io = _TokenCheckpointIO(strategy.checkpoint_io, self)
        else:
            strategy.checkpoint_io.logger = self

    def _on_fit_start(self, trainer: Trainer, module: LightningModule) -> None:
        """Link the run to where the module's starting weights came from (once per run)."""
        ckpt_path = trainer.ckpt_path
        token, loaded_path = self._loaded if self._loaded is not None else (None, None)
        if ckpt_path is None:
            token = None
        with self._guard("provenance", strict=False):
            if (
                token is not None
                and self._resume == "continue"
                and token["run_uuid"] != str(self._uuid)
            ):
                self._switch_to(token["run_uuid"])
                return
            if self._fit_started:
                return  # a second fit() of the same run: its weights are its own
            self._fit_started = True
            if token is not None and token["run_uuid"] == str(self._uuid):
                return  # resuming this very run (run=..., or continue)
            fingerprints = provenance.fingerprint_state_dict(
                module.state_dict(), sample_above=self._sample_above
            )
            if token is not None:
                self._do(
                    "provenance",
                    lambda run: _link_resumed(run, token, str(loaded_path), fingerprints),
                )
            else:
                resumed = ckpt_path is not None
                self._do(
                    "provenance",
                    lambda run: run._link_from_fingerprints(
                        fingerprints, resumed=resumed, infer=True
                    ),
                )

    def _on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        """Register the weights training ended with (kind 'final'), so that later runs that start
        from them link here even if they were saved by hand."""
        with self._guard("checkpoint", strict=False):
            self.register_checkpoint(None, module.state_dict(), trainer.global_step, kind="final")

    def _note_exception(self, exception: BaseException) -> None:
        name = type(exception).__name__
        self._interrupted = isinstance(exception, KeyboardInterrupt) or name == "SIGTERMException"

    def _first_sqltrack_logger(self, trainer: Trainer) -> bool:
        return next((lg for lg in trainer.loggers if isinstance(lg, SQLTrackLogger)), None) is self

    # -- the run, and life without a database -------------------------------------------------

    def _ensure_run(self, *, reopen: bool, now: bool = False) -> Run | None:
        """The run, created on first use; None while the database cannot be reached (then the
        retry thread creates it, unless `now` asks for one more try on this thread)."""
        with self._lock:
            run = self._run
            if run is not None:
                if reopen and run.status is not RunStatus.RUNNING:
                    run = self._reopen(run)
                return run
            if self._offline and not now:
                self._start_retry()
                return None
            try:
                if self._tracker is None:
                    self._tracker = connect(self._url)
                run = self._create_run(self._tracker)
            except (MetricTypeError, ConfigurationError, NotFoundError):
                raise
            except SQLTrackError as exc:
                self._go_offline(exc)
                return None
            self._offline = False
            return run

    def _create_run(self, tracker: Tracker) -> Run:
        """Create (or continue) the run, then replay what was kept while offline (under _lock)."""
        if self._continue is not None:
            run = tracker.continue_run(self._continue)
            self._uuid = run.uuid
        elif self._created:
            run = tracker.continue_run(self._uuid)  # this logger's run, made in another process
        else:
            run = tracker.start_run(
                self._experiment_name,
                name=self._run_name,
                tags=self._tags,
                comment=self._comment,
                uuid=self._uuid,
                started_at=self._created_at,
            )
        self._created = True
        self._continue = None
        self._replay(run)
        self._run = run
        if self._final_status is not None:  # training ended while the database was away
            run.finish(self._final_status)
            self._final_status = None
        return run

    def _replay(self, run: Run) -> None:
        if self._dropped:
            warn_once(
                f"logger:{self._uuid}",
                "dropped",
                f"sqltrack: the database was unreachable for long; the oldest {self._dropped} "
                f"metric rows of run {run.id} did not fit in memory and are lost",
            )
        while self._buffered:
            metrics, step, stamp = self._buffered.popleft()
            run.log(metrics, step, timestamp=stamp)
        deferred, self._deferred = self._deferred, []
        for write in deferred:
            write(run)

    def _reopen(self, run: Run) -> Run:
        assert self._tracker is not None
        self._run = self._tracker.continue_run(run.id)
        return self._run

    def _do(self, cause: str, write: Callable[[Run], object], *, reopen: bool = True) -> None:
        """Apply `write` to the run now, or keep it for when the database answers."""
        with self._guard(cause), self._lock:
            run = self._ensure_run(reopen=reopen)
            if run is None:
                self._deferred.append(write)
            else:
                write(run)

    def _go_offline(self, exc: BaseException) -> None:
        self._offline = True
        warn_once(
            f"logger:{self._uuid}",
            "offline",
            f"sqltrack: cannot reach {mask_password(self._url)} ({exc}); training goes on, and "
            f"run {self._uuid} is kept in memory and written when the database answers",
        )
        self._start_retry()

    def _start_retry(self) -> None:
        if self._retry is None or not self._retry.is_alive():
            self._stop_retry.clear()
            self._retry = threading.Thread(
                target=self._retry_loop, name="sqltrack-lightning-retry", daemon=True
            )
            self._retry.start()

    def _retry_loop(self) -> None:
        """Connect with backoff, off the training thread; create the run once it answers."""
        delay = _RETRY_FIRST_S
        while not self._stop_retry.wait(delay):
            delay = min(delay * 2, _RETRY_MAX_S)
            try:
                tracker = self._tracker or connect(self._url)  # may block: not under _lock
                with self._lock:
                    self._tracker = tracker
                    if self._run is None:
                        self._create_run(tracker)
                    self._offline = False
            except SQLTrackError as exc:
                _log.debug("sqltrack: still cannot reach the database: %s", exc)
                continue
            except Exception:
                _log.exception("sqltrack: could not create run %s", self._uuid)
                return
            _log.info("sqltrack: the database answers again; run %s is written", self._run)
            return

    def _finalize_unseen(self, target: RunStatus) -> None:
        """finalize() on a copy that never made the run: the parent of ddp_spawn children, or a
        process that never reached the database."""
        if self._offline:
            warn_once(
                f"logger:{self._uuid}",
                "unwritten",
                f"sqltrack: {mask_password(self._url)} is still unreachable at the end of "
                f"training; {len(self._buffered)} metric rows of run {self._uuid} stay in memory "
                "and are written if it answers while this process lives",
            )
            return
        if target is RunStatus.COMPLETED:
            return
        # ddp_spawn: a child made the run and failed; only this copy hears of it
        tracker = self._tracker or connect(self._url)
        self._tracker = tracker
        try:
            status = tracker.run_info(self._uuid)["status"]
        except NotFoundError:
            return
        if status in ("running", "crashed"):
            tracker.continue_run(self._uuid).finish(target)
        tracker.close()

    def _switch_to(self, run_uuid: str) -> None:
        """resume="continue": log into the checkpoint's run instead of the one made at setup."""
        with self._lock:
            placeholder, self._run = self._run, None
            if placeholder is not None:
                placeholder.finish(RunStatus.CANCELLED)
                if placeholder._next_step == 0:  # it holds nothing yet: made by Lightning's setup
                    placeholder.tracker.delete_run(placeholder)
            self._continue = run_uuid
            self._uuid = uuid_module.UUID(run_uuid)
            self._fit_started = True  # the continued run recorded its initial weights
            self._ensure_run(reopen=True)

    @contextmanager
    def _guard(self, cause: str, *, strict: bool = True) -> Iterator[None]:
        """Training never stops for tracking: warn once and go on. With `strict`, bad input the
        caller gave still raises; Lightning's own calls are not strict."""
        try:
            yield
        except Exception as exc:
            if strict and isinstance(exc, (MetricTypeError, ConfigurationError, NotFoundError)):
                raise
            warn_once(
                f"logger:{self._uuid}",
                cause,
                f"sqltrack: {cause} of run {self._uuid} failed and is skipped: "
                f"{type(exc).__name__}: {exc}",
            )


def _link_resumed(
    run: Run, token: dict[str, Any], path: str, fingerprints: list[provenance.TensorFingerprint]
) -> None:
    run.link_from_token(token, kind="resumed_from", path=path)
    run._link_from_fingerprints(fingerprints, resumed=True, infer=False)


def _callbacks(trainer: Trainer) -> list[Callback]:
    callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]  # set in __init__
    return callbacks


def _normal_path(path: Any) -> str:
    text = str(os.fspath(path))
    return text if "://" in text else os.path.abspath(text)


class _TokenCheckpointIO(CheckpointIO):
    """Wraps the strategy's CheckpointIO: registers and tokens each checkpoint Lightning saves,
    and reads the token of each one it loads. Anything else goes to the wrapped IO."""

    def __init__(self, wrapped: CheckpointIO, logger: SQLTrackLogger) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.logger = logger

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        state_dict = checkpoint.get("state_dict")
        # ddp_spawn also saves a bare dict of weights through here: not a checkpoint
        if "pytorch-lightning_version" in checkpoint and isinstance(state_dict, Mapping):
            logger = self.logger
            with logger._guard("checkpoint", strict=False):
                normal = _normal_path(path)
                step = checkpoint.get("global_step")
                token = logger.register_checkpoint(
                    normal, state_dict, step if isinstance(step, int) else None
                )
                checkpoint[_TOKEN_KEY] = token
                logger._io_paths.add(normal)
        self.wrapped.save_checkpoint(checkpoint, path, storage_options)

    @override
    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checkpoint: dict[str, Any] = self.wrapped.load_checkpoint(path, *args, **kwargs)
        if isinstance(checkpoint, dict):
            token = provenance.read_token(checkpoint.get(_TOKEN_KEY))
            self.logger._loaded = (token, _normal_path(path))
        return checkpoint

    @override
    def remove_checkpoint(self, path: Any) -> None:
        self.wrapped.remove_checkpoint(path)

    @override
    def teardown(self) -> None:
        self.wrapped.teardown()


class SQLTrackCallback(Callback):
    """The provenance half of `SQLTrackLogger`; Lightning adds it to every Trainer through the
    ``lightning.pytorch.callbacks_factory`` entry point. It does nothing unless the Trainer has a
    `SQLTrackLogger` (the first one gets the provenance) and it is the first of its kind."""

    def _logger(self, trainer: Trainer) -> SQLTrackLogger | None:
        if not trainer.is_global_zero:
            return None
        first = next((cb for cb in _callbacks(trainer) if isinstance(cb, SQLTrackCallback)), None)
        if first is not self:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, SQLTrackLogger)), None)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger._attach(trainer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger._on_fit_start(trainer, pl_module)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger._on_train_end(trainer, pl_module)

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger._note_exception(exception)


def callbacks_factory() -> SQLTrackCallback:
    """The ``lightning.pytorch.callbacks_factory`` entry point (see pyproject.toml)."""
    return SQLTrackCallback()
