"""A fourth integration, for a plain PyTorch loop, built on the public seam alone.

`PlainLoopTracker` is what `sqltrack_integrations` does for Lightning, Hugging Face and Keras,
written for a hand-made loop with nothing but ``sqltrack_core``, ``sqltrack_core.integration``,
``sqltrack_core.provenance`` and ``sqltrack_core.errors``: copy it next to your own loop (or
Accelerate, or fastai) and adapt. Run it from anywhere (a few seconds); it writes
``sqltrack.db`` in the working directory (or wherever ``$SQLTRACK_URL`` points) and its
checkpoints to a temporary folder::

    python examples/plain_loop_adapter.py
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

import sqltrack_core as sqltrack
from sqltrack_core import provenance
from sqltrack_core.errors import ConfigurationError, MetricTypeError, RunStateError, SQLTrackError
from sqltrack_core.integration import (
    check_description,
    database_url,
    status_for,
    to_loggable,
    to_params,
    warn_once,
)

TOKEN_KEY = "sqltrack"  # where the token lives in a checkpoint dict


class PlainLoopTracker:
    """Track a hand-written PyTorch training loop: metrics, checkpoints with tokens, lineage.

    Example::

        with PlainLoopTracker("mnist", params={"lr": 0.1}) as tracker:
            for step in range(tracker.start(model, optimizer), 1000):
                tracker.log({"train/loss": loss.item()}, step)

    Leaving the block finishes the run: completed, failed after an exception, cancelled after
    Ctrl-C (SIGTERM cancels it too). Database trouble never stops training: it warns once.
    """

    def __init__(
        self,
        experiment: str,
        url: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        run: int | str | uuid.UUID | None = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> None:
        check_description(experiment, name, None, None)  # bad input fails here, not mid-training
        self.url = database_url(url)
        self.experiment, self.name, self.params = experiment, name, to_params(params or {})
        self.resume_from = resume_from
        self._continue = run  # an existing run to go on in (by id or UUID)
        self._owner = f"plain-loop:{uuid.uuid4()}"  # warn_once says each cause once per tracker
        self._model: nn.Module | None = None
        self.database: sqltrack.Tracker | None = None
        self.run: sqltrack.Run | None = None

    def __enter__(self) -> PlainLoopTracker:
        if self.run is not None:  # one tracker is one run: a second `with` goes on in it
            self._continue = self.run.uuid
        with self._guard("start"):
            self.database = sqltrack.connect(self.url)  # offline if away: runs go to the spool
            if self._continue is None:
                self.run = self.database.start_run(
                    self.experiment, name=self.name, params=self.params
                )
            else:
                self.run = self.database.continue_run(self._continue, experiment=self.experiment)
                self.run.log_params(self.params)
        return self

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Log `values` at `step` (default: the next one); never waits for the database."""
        with self._guard("log"):
            self._live_run().log({key: to_loggable(v) for key, v in values.items()}, step)

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Record the weights training starts from and link the runs they came from; return
        the step to start at. With `resume_from`, that checkpoint is loaded into `model` and
        `optimizer` first, and its token links ``resumed_from`` the run that saved it. A run
        that goes on (``run=...``, a second `with`) keeps the links it has."""
        token, path, run = None, None, self.run
        first_step = 0 if run is None else run.next_step
        if self.resume_from is not None:
            path = os.path.abspath(self.resume_from)
            checkpoint = torch.load(path, weights_only=True)
            model.load_state_dict(checkpoint["model"])
            if optimizer is not None:
                optimizer.load_state_dict(checkpoint["optimizer"])
            first_step = checkpoint["step"] + 1
            token = provenance.read_token(checkpoint.get(TOKEN_KEY))
        self._model = model
        if self._continue is not None:
            return first_step
        with self._guard("provenance"):
            run = self._live_run()
            if token is not None:
                run.link_from_token(token, kind="resumed_from", path=path)
            # without a token, fingerprints find the parent (finetuned_from, or resumed_from)
            run.link_from_weights(model.state_dict(), resumed=path is not None, infer=token is None)
        return first_step

    def save_checkpoint(
        self,
        path: str | os.PathLike[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
    ) -> None:
        """Save a resumable checkpoint carrying this run's token (loadable with weights_only)."""
        state, token = model.state_dict(), None
        with self._guard("checkpoint"):
            token = self._live_run().register_checkpoint(os.path.abspath(path), state, step)
        checkpoint = {"model": state, "optimizer": optimizer.state_dict(), "step": step}
        torch.save({**checkpoint, TOKEN_KEY: token}, path)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = status_for(exc)
        with self._guard("finish", strict=False):  # never replaces the loop's own exception
            if self.run is not None:
                if self._model is not None:  # weights saved by hand later still link here
                    step = self.run.next_step - 1 if self.run.next_step else None
                    self.run.register_checkpoint(None, self._model.state_dict(), step, kind="final")
                self.run.finish(status)
        if self.database is not None:
            self.database.close()

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickled for another process, or deep-copied) goes on in the same run."""
        run = self._continue if self.run is None else str(self.run.uuid)
        keep = {"url": self.url, "name": self.name, "params": self.params, "run": run}
        return {"experiment": self.experiment, **keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _live_run(self) -> sqltrack.Run:
        if self.run is None:
            raise RunStateError("no run: use the tracker as a context manager (`with ...:`)")
        return self.run

    @contextlib.contextmanager
    def _guard(self, cause: str, *, strict: bool = True) -> Iterator[None]:
        """Training never stops for tracking: database trouble warns once and is skipped.
        With `strict`, bad input (a bad value or option) still raises where it was made."""
        try:
            yield
        except SQLTrackError as exc:
            if strict and isinstance(exc, (ConfigurationError, MetricTypeError)):
                raise
            warn_once(self._owner, cause, f"sqltrack: {cause} skipped: {exc}")


# -- the demo: pre-train, fine-tune from the checkpoint, resume the fine-tune -------------------


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))


def train(tracker: PlainLoopTracker, model: nn.Module, task: int, steps: int, folder: Path) -> None:
    """The plain loop: SGD on synthetic task `task` (y = sin(x @ w)), a checkpoint every 10 steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    weights = torch.randn(8, 1, generator=torch.Generator().manual_seed(task))
    for step in range(tracker.start(model, optimizer), steps):
        x = torch.randn(32, 8)
        loss = nn.functional.mse_loss(model(x), torch.sin(x @ weights))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log({"train/loss": loss.item(), "epoch": step // 10}, step)
        if step % 10 == 9:
            tracker.save_checkpoint(folder / f"{tracker.name}-{step}.pt", model, optimizer, step)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sqltrack-plain-"))
    torch.manual_seed(0)
    with PlainLoopTracker("plain-pretrain", name="base", params={"optim": {"lr": 0.05}}) as base:
        train(base, mlp(), task=0, steps=30, folder=folder)

    # Fine-tune on another task from the base's last checkpoint: its weights only, so the
    # link comes from fingerprints (finetuned_from) ...
    model = mlp()
    model.load_state_dict(torch.load(folder / "base-29.pt", weights_only=True)["model"])
    with PlainLoopTracker("plain-finetune", name="tuned") as tuned:
        train(tuned, model, task=1, steps=20, folder=folder)

    # ... then resume the fine-tune from its step-9 checkpoint as a requeued job would: the
    # token inside the file links resumed_from.
    resume = folder / "tuned-9.pt"
    with PlainLoopTracker("plain-finetune", name="tuned (resumed)", resume_from=resume) as again:
        train(again, mlp(), task=1, steps=20, folder=folder)

    assert again.run is not None
    with sqltrack.connect() as tracker:  # the same default database: $SQLTRACK_URL or sqltrack.db
        lineage = tracker.lineage(again.run.uuid)
    lineage["by"] = [evidence["method"] for evidence in lineage["evidence"]]
    print(f"lineage of run {again.run.id} ({again.name}):")
    print(lineage[["relation", "depth", "kind", "run_id", "name", "status", "by"]].to_string())
    print(f"\ncheckpoints are in {folder}")


if __name__ == "__main__":
    main()
