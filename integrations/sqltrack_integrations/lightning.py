"""PyTorch Lightning logger for sqltrack-core, with provenance links from checkpoints.

``Trainer(logger=SQLTrackLogger("my-experiment"))`` is all a script needs: the run, its
hyperparameters, its metrics as typed columns (``epoch`` included), every checkpoint file the
Trainer writes, and links to the runs its starting weights came from.

How the pieces meet (the verified Lightning facts are in docs/design/lightning-integration.md):

- `SQLTrackLogger` creates its run lazily on rank 0, under a UUID it makes in ``__init__``; that
  UUID is the logger's ``version``, so each run has its own folder ``save_dir/name/version``
  (``log_dir``: checkpoints, LightningCLI's ``config.yaml``, profiler reports). It subclasses
  `CSVLogger` only because ``Trainer.log_dir`` asks for a logger's ``log_dir`` from
  TensorBoard and CSV loggers alone and takes ``save_dir`` from every other; it writes no CSV.
- `SQLTrackCallback` reaches the Trainer through the ``lightning.pytorch.callbacks_factory``
  entry point (and, failing that, `SQLTrackLogger.log_graph` adds it). The factory runs in
  every ``Trainer.__init__``, before the Trainer has loggers, so it adds the callback only
  while a `SQLTrackLogger` exists in the process: a Trainer in a script that never makes one
  gets nothing and prints nothing. The callback is a no-op without a `SQLTrackLogger` in its
  Trainer. At setup it wraps the strategy's CheckpointIO in `_TokenCheckpointIO`, which
  fingerprints and registers every checkpoint Lightning saves (``save_weights_only`` and
  ``last.ckpt`` included) and embeds the token, and which reads the token back on
  ``fit(ckpt_path=...)``. At fit start the module's weights are matched against the registry
  (after a ``bf16-true`` or ``16-true`` cast: the cast keys find fp32 parents).
- ``Module.load_from_checkpoint(path)`` shows the checkpoint dict to the module's own
  ``on_load_checkpoint`` alone (no Trainer, callback or CheckpointIO takes part), so importing
  this module wraps Lightning's default of that hook (a no-op): it keeps the checkpoint's token
  on the module, and the next fit links to the token's run by token, whatever cast comes after.
  A module that overrides the hook without calling ``super()`` keeps no token; its weights still
  link it by fingerprint.
- A database that cannot be reached never stops training: the logger warns, and the core's
  offline path spools what is logged and writes it all when the database answers.
"""

from __future__ import annotations

import os
import re
import uuid as uuid_module
import weakref
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.core.hooks import CheckpointHooks
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from sqltrack_core import RunStatus, provenance
from sqltrack_core.errors import ConfigurationError, MetricTypeError
from sqltrack_core.integration import to_params
from sqltrack_integrations._session import RunSession, TracksARun

__all__ = ["SQLTrackCallback", "SQLTrackLogger"]

#: Lightning's finalize() status -> the run's status. "finished" only comes from the SLURM
#: requeue handler: the job stops to be requeued, so the run is interrupted, not done.
_FINAL_STATUS = {
    "success": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "finished": RunStatus.CANCELLED,
}
_TOKEN_KEY = "sqltrack"  # where the token lives in a Lightning checkpoint dict
#: the module attribute that keeps the token of the checkpoint it was loaded from, until a fit
_LOADED_TOKEN = "_sqltrack_loaded_token"
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=+-]+")
#: Every SQLTrackLogger alive in this process: `callbacks_factory` adds the callback only while
#: there is one (Lightning prints a line for each callback an entry point adds).
_LOGGERS: weakref.WeakSet[SQLTrackLogger] = weakref.WeakSet()


class SQLTrackLogger(CSVLogger, TracksARun):
    """Log a Lightning run to sqltrack-core (SQLite by default, or PostgreSQL).

    Args:
        experiment: the experiment the run belongs to, also the checkpoint folder's name;
            default ``$SQLTRACK_EXPERIMENT``, else ``"lightning_logs"``.
        url: the database (``sqlite:///path.db``, ``postgresql://user@host/db``); default
            ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``.
        name: the run's name.
        tags, comment: stored with the run.
        resume: on ``trainer.fit(ckpt_path=...)`` from a checkpoint of another run, ``"new"``
            (default) starts a new run linked ``resumed_from`` it; ``"continue"`` goes on logging
            into that run, as a preempted job wants.
        run: continue this existing run (id or UUID) from the start; its UUID becomes
            ``version``, so checkpoints land in its folder again and ``ckpt_path="last"`` finds them.
        save_dir: root of the run folders (``save_dir/name/version`` is ``log_dir``); default
            the Trainer's ``default_root_dir``. Pass it with LightningCLI when you also set
            ``default_root_dir``: ``config.yaml`` is written before the logger meets the
            Trainer, into the working directory's folder otherwise.
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
        experiment: str | None = None,
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
        Logger.__init__(self)  # not CSVLogger's: no CSV files (see the module docstring)
        self._session = RunSession(
            experiment,
            url,
            default_experiment="lightning_logs",
            name=name,
            tags=tags,
            comment=comment,
            resume=resume,
            run=run,
            sample_above=sample_above,
        )
        self._root = None if save_dir is None else os.path.abspath(os.fspath(save_dir))
        self._cwd = os.getcwd()  # the root until the Trainer's default_root_dir is known
        self._init_process_state()

    def _init_process_state(self) -> None:
        """State that belongs to one process: dropped when pickled for ddp_spawn."""
        _LOGGERS.add(self)  # before the Trainer it is given to calls callbacks_factory
        self._trainer: weakref.ReferenceType[Trainer] | None = None
        self._loaded: tuple[dict[str, Any] | None, str] | None = None  # token, path
        self._io_paths: set[str] = set()  # registered by _TokenCheckpointIO
        self._fit_started = False
        self._interrupted = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_trainer", "_loaded", "_io_paths", "_fit_started", "_interrupted"):
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
        return _UNSAFE_PATH_CHARS.sub("_", self._session.experiment).strip("._") or "experiment"

    @property
    @override
    def version(self) -> str:
        """The run's UUID."""
        return str(self._session.uuid)

    @property
    @override
    def save_dir(self) -> str | None:  # type: ignore[override]  # None as in Logger.save_dir
        """The root of the run folders: `save_dir` as given, else the Trainer's
        ``default_root_dir`` once the logger has met its Trainer (None before: Lightning then
        uses ``default_root_dir`` itself)."""
        if self._root is not None:
            return self._root
        trainer = self._trainer() if self._trainer is not None else None
        return None if trainer is None else os.path.abspath(trainer.default_root_dir)

    @property
    @override
    def root_dir(self) -> str:
        """`save_dir`, or the working directory when the logger was made until the logger
        meets its Trainer: Lightning asks for ``Trainer.log_dir`` (for a profiler, LightningCLI
        for its config) before any callback runs, so with a ``default_root_dir`` of its own
        give `save_dir` to keep those files in the run's folder."""
        return self.save_dir or self._cwd

    @property
    @override
    def log_dir(self) -> str:
        """``root_dir/name/version``, this run's own folder: ``Trainer.log_dir``, and where
        default checkpoints go (in ``checkpoints/``)."""
        return os.path.join(self.root_dir, self.name, self.version)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `sqltrack_core.Run` (created on first use, offline if the database is away; its
        ``id`` is None until the database answers)."""
        return self._session.ensure_run(reopen=False)

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log `metrics` at Lightning's `step` (``epoch`` arrives here too and is a column)."""
        if not isinstance(metrics, Mapping):
            raise MetricTypeError(
                f"metrics {metrics!r:.80} is a {type(metrics).__name__}; expected a dict"
            )
        self._session.log(metrics, step)

    @override
    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        """Merge `params` into the run's params: dicts, argparse and jsonargparse Namespaces,
        omegaconf configs, dataclasses, attrs and pydantic models keep their structure (lists
        stay lists, nested stays nested); values JSON cannot hold are stored as their ``str()``.
        """
        if params is None:
            return
        plain = to_params(params)
        if not isinstance(plain, dict):
            raise ConfigurationError(
                f"hyperparameters {params!r:.80} are a {type(params).__name__}; expected a dict, "
                "Namespace or dataclass"
            )
        if plain:
            self._session.do("params", lambda run: run.log_params(plain))

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
            self.attach_trainer(trainer)
            self.fit_started(trainer, model)

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
        self._session.finish(target)

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
        with self._session.guard("checkpoint", strict=False):
            self._session.register_checkpoint(
                path, trainer.lightning_module.state_dict(), trainer.global_step
            )

    # -- checkpoints and provenance -----------------------------------------------------------

    def register_checkpoint(
        self, path: str | None, state_dict: Mapping[str, Any], step: int | None
    ) -> dict[str, Any]:
        """Fingerprint and register a checkpoint of this run; return the token to embed.

        The Trainer's checkpoints are registered without calling this; it is for files a script
        writes itself. Never raises for a database problem: the token is made locally.
        """
        return self._session.register_checkpoint(path, state_dict, step)

    # -- what SQLTrackCallback calls (rank 0) ---------------------------------------------------

    def attach_trainer(self, trainer: Trainer) -> None:
        """At setup: wrap the Trainer's CheckpointIO, reset per-fit state."""
        self._trainer = weakref.ref(trainer)
        self._loaded = None
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, _TokenCheckpointIO):
            strategy.checkpoint_io = _TokenCheckpointIO(strategy.checkpoint_io, self)
        else:
            strategy.checkpoint_io.logger = self

    def fit_started(self, trainer: Trainer, module: LightningModule) -> None:
        """At fit start: link the run to where the module's starting weights came from (once
        per run): a resume by its checkpoint's token, weights from ``load_from_checkpoint`` by
        theirs, anything else by fingerprints."""
        loaded = vars(module).pop(_LOADED_TOKEN, None)  # consumed by this fit, whatever it is
        ckpt_path = trainer.ckpt_path
        token, loaded_path = self._loaded if self._loaded is not None else (None, None)
        if ckpt_path is None:
            token = None
        session = self._session
        with session.guard("provenance", strict=False):
            if session.continue_from(token):
                self._fit_started = True  # the continued run recorded its initial weights
                return
            if self._fit_started:
                return  # a second fit() of the same run: its weights are its own
            self._fit_started = True
            if token is not None and token["run_uuid"] == str(session.uuid):
                return  # resuming this very run (run=...)
            if ckpt_path is None and loaded is not None and loaded["run_uuid"] != str(session.uuid):
                token = loaded  # weights from load_from_checkpoint of another run's checkpoint
            session.link_initial_weights(
                module.state_dict(),
                resumed=ckpt_path is not None,
                token=token,
                path=loaded_path,
            )

    def train_ended(self, trainer: Trainer, module: LightningModule) -> None:
        """At train end: register the weights training ended with (kind 'final'), so that later
        runs that start from them link here even if they were saved by hand."""
        with self._session.guard("checkpoint", strict=False):
            self._session.register_checkpoint(
                None, module.state_dict(), trainer.global_step, kind="final"
            )

    def exception_raised(self, exception: BaseException) -> None:
        """On an exception: Ctrl-C and SIGTERM make the coming finalize("failed") cancelled."""
        name = type(exception).__name__
        self._interrupted = isinstance(exception, KeyboardInterrupt) or name == "SIGTERMException"

    def _first_sqltrack_logger(self, trainer: Trainer) -> bool:
        return next((lg for lg in trainer.loggers if isinstance(lg, SQLTrackLogger)), None) is self


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
            with logger._session.guard("checkpoint", strict=False):
                normal = _normal_path(path)
                step = checkpoint.get("global_step")
                token = logger._session.register_checkpoint(
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
        """Remove the file (``save_top_k`` drops one) and record that it is gone."""
        self.wrapped.remove_checkpoint(path)
        with self.logger._session.guard("checkpoint", strict=False):
            self.logger._session.checkpoint_removed(_normal_path(path))

    @override
    def teardown(self) -> None:
        self.wrapped.teardown()


class SQLTrackCallback(Callback):
    """The provenance half of `SQLTrackLogger`; Lightning adds it through the
    ``lightning.pytorch.callbacks_factory`` entry point to each Trainer made while a
    `SQLTrackLogger` exists. It does nothing unless the Trainer has a `SQLTrackLogger` (the first
    one gets the provenance) and it is the first of its kind."""

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
            logger.attach_trainer(trainer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger.fit_started(trainer, pl_module)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger.train_ended(trainer, pl_module)

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger.exception_raised(exception)


def callbacks_factory() -> list[Callback]:
    """The ``lightning.pytorch.callbacks_factory`` entry point (see pyproject.toml).

    Lightning calls it with no arguments in every ``Trainer.__init__``, before the Trainer's
    loggers are set, and logs "Adding N callbacks from entry point ..." at INFO unless it
    returns an empty list. The loggers a Trainer will have are made before it, so a Trainer
    made while no `SQLTrackLogger` exists cannot have one: it gets nothing. Otherwise it gets
    the callback, which is a no-op if that Trainer has no `SQLTrackLogger` after all. (A logger
    made after its Trainer, ``trainer.logger = SQLTrackLogger()``, is caught by ``log_graph``.)
    """
    return [SQLTrackCallback()] if _LOGGERS else []


def _keep_loaded_tokens() -> None:
    """Wrap Lightning's default ``on_load_checkpoint`` (a no-op) so that it keeps the token of
    the checkpoint on the module (see the module docstring). Once per process; not with
    `functools.wraps`, so that Lightning's `is_overridden` still sees the default as such."""
    default = CheckpointHooks.on_load_checkpoint
    if getattr(default, "_sqltrack_keeps_tokens", False):
        return

    def on_load_checkpoint(self: Any, checkpoint: dict[str, Any]) -> None:
        token = (
            provenance.read_token(checkpoint.get(_TOKEN_KEY))
            if isinstance(checkpoint, Mapping)
            else None
        )
        vars(self)[_LOADED_TOKEN] = token  # None drops a token from an earlier load
        default(self, checkpoint)

    on_load_checkpoint.__doc__ = default.__doc__
    on_load_checkpoint._sqltrack_keeps_tokens = True  # type: ignore[attr-defined]
    setattr(CheckpointHooks, "on_load_checkpoint", on_load_checkpoint)  # noqa: B010


_keep_loaded_tokens()
