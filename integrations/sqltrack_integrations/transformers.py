"""Hugging Face `transformers.Trainer` callback for sqltrack-core, with provenance links.

``Trainer(..., callbacks=[SQLTrackCallback("my-experiment")])`` gives a tracked run: the
TrainingArguments and the model config as params, every ``trainer.log()`` value as a typed
column at ``state.global_step`` (train, ``eval_*`` and end-of-training summary keys, and
anything else; non-numeric values too), every ``checkpoint-N/`` registered (and marked
removed once ``save_total_limit`` rotates it away), and links to the runs the starting weights
came from. ``report_to="sqltrack"`` works too, once this module is imported.

Values logged after ``train()`` ended (a final ``trainer.evaluate()``) land at the same
``global_step`` as the last in-training evaluation, so they are stored under the key prefix
``final/`` (``final/eval_loss``, ``final/epoch``) instead of overwriting it; a second
post-training log of the same key at that step uses ``final2/``, then ``final3/``, and so on.
Keys logged during training, or by an evaluate-only script, are kept as they are.

Provenance carriers (the brief's "Provenance"):

- the token ``{"run_uuid", "checkpoint_uuid", "step"}`` rides on ``model.config.sqltrack``, so
  ``save_model``, ``save_pretrained`` and ``from_pretrained(local_dir)`` carry it; it is put
  there before each save (the Trainer writes ``config.json`` before ``on_save``);
- ``checkpoint-N/sqltrack.json`` holds the same token next to the files it describes; it is how
  ``train(resume_from_checkpoint=...)`` is recognised (``resumed_from``). Nothing is added to
  ``trainer_state.json``, and the callback keeps no state to restore;
- weight fingerprints decide ``finetuned_from`` / ``initialized_from`` at train begin, so a
  config that carries a token on a freshly initialised model links nothing.
"""

from __future__ import annotations

import json
import os
import uuid as uuid_module
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from sqltrack_core import RunStatus, provenance
from sqltrack_core.integration import to_loggable, to_params
from sqltrack_integrations._session import RunSession, TracksARun

__all__ = ["SQLTrackCallback"]

_CONFIG_KEY = "sqltrack"  # model.config attribute that carries the token
SIDECAR = "sqltrack.json"  # the token file in each checkpoint-N/ folder
_SECRET_HINTS = ("password", "secret", "api_key", "access_key")


class SQLTrackCallback(TrainerCallback, TracksARun):
    """Track a `transformers.Trainer` run in sqltrack-core.

    Args:
        experiment: the run's experiment; default ``$SQLTRACK_EXPERIMENT``, else
            ``"huggingface"``.
        url: the database; default ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``.
        name: the run's name; default ``TrainingArguments.run_name`` when it is set.
        tags, comment: stored with the run.
        resume: on ``train(resume_from_checkpoint=...)`` from another run's checkpoint,
            ``"new"`` (default) starts a new run linked ``resumed_from``; ``"continue"`` goes on
            logging into that run (preempted jobs).
        run: continue this existing run (id or UUID) from the start.
        sample_above: fingerprint a sample of tensors larger than this (very large models).

    Example::

        trainer = Trainer(model, args, train_dataset=train, callbacks=[SQLTrackCallback("bert")])
        trainer.train()

    Only the world process zero writes; the run is created, with its name and params, at
    train begin (or at the first log of an evaluate-only script). Values are read from the
    Trainer's ``state.log_history``, so a callback that edits the logs dict before this one
    (``PrinterCallback`` pops ``total_flos``) changes nothing. Everything logged after
    ``train()`` ended goes under ``final/`` (``final/eval_loss``), then ``final2/``, ... for
    a key logged again at that step, so the last in-training evaluation is never overwritten.
    A ``train()`` that raised ends the run ``failed`` when the process exits, even if the script
    caught the exception; SIGTERM or Ctrl-C end it ``cancelled``. One callback is one run: a
    second ``train()`` with it goes on in the run, its steps after the first's (global_step
    plus the run's next step), so nothing the first logged is overwritten.
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
        sample_above: int | None = None,
    ) -> None:
        self._session = RunSession(
            experiment,
            url,
            default_experiment="huggingface",
            name=name,
            tags=tags,
            comment=comment,
            resume=resume,
            run=run,
            sample_above=sample_above,
        )
        self._started = False  # the run's starting weights were recorded
        self._armed: dict[str, Any] | None = None  # the token on model.config, for the next save
        self._ended = False  # on_train_end came, and no train began since
        self._training = False  # between on_train_begin and on_train_end
        self._offset = 0  # added to global_step: a later train() goes on after the run's steps
        self._last_entry: dict[str, Any] | None = None  # the log_history entry logged last
        # {step: keys logged after training ended at that step} (one step at most): picks the
        # final/, final2/, ... prefix that overwrites nothing
        self._logged_after_end: dict[int, set[str]] = {}
        self._checkpoints: set[str] = set()  # folders registered in this process, still there

    # -- TrainerCallback ------------------------------------------------------------------------

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Create the run with its params; link where the starting weights came from."""
        if not state.is_world_process_zero:
            return
        session = self._session
        # A later train() with this callback goes on in its run, counting global steps from
        # 0 again: its steps (metrics, checkpoints, tokens) go on after the run's. A resume
        # keeps the checkpoint's steps.
        if state.global_step > 0:
            self._offset = 0
        elif self._ended and session.run is not None:
            self._offset = session.run.next_step
        self._ended = False
        self._training = True
        # Transformers tells callbacks nothing when train() raises: a train() that never
        # reaches on_train_end by the time the process exits has failed.
        session.begin_training()
        with session.guard("train begin", strict=False):
            resumed = state.global_step > 0
            token, path = _resume_token(args, state) if resumed else (None, None)
            if session.continue_from(token):
                self._started = True  # the continued run recorded its starting weights
            self._describe(args, model)
            if not self._started and model is not None:
                self._started = True
                session.link_initial_weights(
                    model.state_dict(), resumed=resumed, token=token, path=path
                )
            self._arm(model, state.global_step + self._offset)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        armed = self._armed
        if armed is not None:
            armed["step"] = (
                state.global_step + self._offset
            )  # what config.json says if a save follows

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Log what the Trainer logged at ``state.global_step`` (after training ended under
        ``final/``); values that are not numbers are kept too."""
        if not state.is_world_process_zero:
            return
        values = {str(key): to_loggable(value) for key, value in self._logged(state, logs).items()}
        if not values:
            return
        session = self._session
        step = state.global_step + self._offset
        with session.guard("log", strict=False):
            if self._ended:
                # evaluate() after train(): at the step of the last in-training evaluation
                session.log_after_end(self._after_end(values, step), step)
                return
            if not self._training and session.run is None:
                self._describe(args, model)  # an evaluate-only script
            session.log(values, step)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Register ``checkpoint-N/`` under the token its config.json carries, and write the
        token next to it; arm a new token for the next save."""
        if not state.is_world_process_zero or model is None:
            return
        folder = _checkpoint_folder(args, state)
        self._report_removed()  # save_total_limit rotated folders away before on_save
        with self._session.guard("checkpoint", strict=False):
            token = self._session.register_checkpoint(
                folder, model.state_dict(), state.global_step + self._offset, token=self._armed
            )
            self._checkpoints.add(folder)
            if os.path.isdir(folder):
                with open(os.path.join(folder, SIDECAR), "w", encoding="utf-8") as file:
                    json.dump(token, file)
        self._arm(model, state.global_step + self._offset)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Register the final weights under the armed token (a later ``save_model`` carries it)
        and finish the run as completed."""
        if not state.is_world_process_zero:
            return
        session = self._session
        self._report_removed()  # load_best_model_at_end with save_total_limit=1 deletes one more
        if model is not None:
            with session.guard("checkpoint", strict=False):
                session.register_checkpoint(
                    None,
                    model.state_dict(),
                    state.global_step + self._offset,
                    kind="final",
                    token=self._armed,
                )
        session.end_training()
        session.finish(RunStatus.COMPLETED)
        self._ended = True
        self._training = False

    # -- helpers ----------------------------------------------------------------------------------

    def _describe(self, args: TrainingArguments, model: Any) -> None:
        """Name the run after ``args.run_name`` (unless named already, or it is only the output
        dir) and log the params: at train begin, or at the first log of an evaluate-only script."""
        session = self._session
        if session.name is None and args.run_name and args.run_name != args.output_dir:
            session.name = args.run_name
        params = _params(args, model)
        session.do("params", lambda run: run.log_params(params))

    def _logged(self, state: TrainerState, logs: Mapping[str, Any] | None) -> dict[str, Any]:
        """What ``Trainer.log`` logged: its new ``log_history`` entry (less ``step``) over `logs`,
        so keys another callback added to `logs` stay and keys one popped come back
        (``PrinterCallback`` pops ``total_flos``); just `logs` without a new entry (a direct
        ``on_log`` call)."""
        merged = dict(logs or {})
        history = state.log_history
        entry = history[-1] if history else None
        if (
            isinstance(entry, dict)
            and entry is not self._last_entry
            and entry.get("step") == state.global_step
        ):
            self._last_entry = entry
            merged.update((key, value) for key, value in entry.items() if key != "step")
        return merged

    def _after_end(self, values: Mapping[str, Any], step: int) -> dict[str, Any]:
        """`values` under the first of ``final/``, ``final2/``, ... that none of their keys was
        logged under at `step` since training ended (see the module docstring)."""
        if step not in self._logged_after_end:
            self._logged_after_end = {step: set()}
        seen = self._logged_after_end[step]
        number = 1
        while True:
            prefix = "final/" if number == 1 else f"final{number}/"
            renamed = {prefix + key: value for key, value in values.items()}
            if seen.isdisjoint(renamed):
                seen.update(renamed)
                return renamed
            number += 1

    def _report_removed(self) -> None:
        """Mark the checkpoint folders registered here that are gone from disk as removed."""
        gone = sorted(folder for folder in self._checkpoints if not os.path.exists(folder))
        for folder in gone:
            self._checkpoints.discard(folder)  # reported once, even if the report fails
            with self._session.guard("checkpoint", strict=False):
                self._session.checkpoint_removed(folder)

    def _arm(self, model: Any, step: int) -> None:
        """Put a fresh token of this run on ``model.config`` for the next save."""
        config = getattr(model, "config", None)
        if config is None:
            return
        self._armed = self._session.next_token(step)
        setattr(config, _CONFIG_KEY, self._armed)


def _resume_token(
    args: TrainingArguments, state: TrainerState
) -> tuple[dict[str, Any] | None, str | None]:
    """The token of the checkpoint a resumed train() started from, from its sidecar: in
    ``args.resume_from_checkpoint`` if a script set it, else where the Trainer keeps it. Without
    one (a folder copied elsewhere), fingerprints decide."""
    folders = [_checkpoint_folder(args, state)]
    if isinstance(args.resume_from_checkpoint, str):
        folders.insert(0, os.path.abspath(args.resume_from_checkpoint))
    for folder in folders:
        try:
            with open(os.path.join(folder, SIDECAR), encoding="utf-8") as file:
                token = provenance.read_token(json.load(file))
        except (OSError, ValueError):
            continue
        if token is not None and token["step"] == state.global_step:
            return token, folder
    return None, None


def _checkpoint_folder(args: TrainingArguments, state: TrainerState) -> str:
    """Where the Trainer writes ``checkpoint-<global_step>`` (outside hyperparameter search)."""
    return os.path.abspath(
        os.path.join(args.output_dir or "trainer_output", f"checkpoint-{state.global_step}")
    )


def _params(args: TrainingArguments, model: Any) -> dict[str, Any]:
    """TrainingArguments and the model config, JSON-safe, without anything secret."""
    settings: dict[str, Any] = args.to_dict()  # type: ignore[no-untyped-call]
    params: dict[str, Any] = {"args": _without_secrets(settings)}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = config.to_dict()
        settings.pop(_CONFIG_KEY, None)
        params["model"] = _without_secrets(settings)
    plain: dict[str, Any] = to_params(params)
    return plain


def _without_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``hub_token``-like keys (HF masks them already) and anything named like a secret."""
    return {
        key: value
        for key, value in values.items()
        if not (
            str(key).lower().endswith("_token")
            or str(key).lower() == "token"
            or any(hint in str(key).lower() for hint in _SECRET_HINTS)
        )
    }


def _register_report_to() -> None:
    """Make ``TrainingArguments(report_to="sqltrack")`` find this callback (best effort)."""
    try:
        from transformers.integrations import integration_utils
    except ImportError:  # pragma: no cover - a transformers without the registry
        return
    registry = getattr(integration_utils, "INTEGRATION_TO_CALLBACK", None)
    if isinstance(registry, dict):
        registry.setdefault("sqltrack", SQLTrackCallback)


_register_report_to()
