"""The contract driver for `SQLTrackLogger`: a tiny LightningModule, 2 epochs of 2 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from _contract_drivers import Interrupt, RunResult, interrupt_at
from _lightning_models import regression_data
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn
from typing_extensions import override

from sqltrack_integrations.lightning import SQLTrackLogger

EPOCHS = 2


class Model(LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters({"optim": {"name": "sgd", "lr": lr}})
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["optim"]["lr"])


class Recorder(Logger):
    """A second logger: what Lightning reported to its loggers, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int, dict[str, Any]]] = []

    @property
    @override
    def name(self) -> str:
        return "recorder"

    @property
    @override
    def version(self) -> int:
        return 0

    @override
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        assert step is not None
        self.history.append((step, dict(metrics)))

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class Interrupter(Callback):
    def __init__(self, interrupt: Interrupt | None) -> None:
        self.interrupt = interrupt

    @override
    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        interrupt_at(self.interrupt, trainer.global_step)


def _data(seed: int) -> Any:
    return regression_data(32, seed=seed)  # 2 batches of 16


class LightningDriver:
    name = "lightning"
    nested_param = ("params.optim.lr", 0.05)
    int_key = "epoch"

    def train(
        self,
        url: str,
        folder: Path,
        *,
        experiment: str = "contract",
        again: RunResult | None = None,
        resume_from: Path | None = None,
        weights_from: Path | None = None,
        interrupt: Interrupt | None = None,
    ) -> RunResult:
        folder.mkdir(parents=True, exist_ok=True)
        if again is not None:  # fit() again on the same Trainer, for 2 more epochs
            trainer, model, recorder = again.state
            logger = again.tracking
            trainer.fit_loop.max_epochs += EPOCHS
        else:
            logger = SQLTrackLogger(experiment, url)
            recorder = Recorder()
            torch.manual_seed(0)
            model = Model()
            if weights_from is not None:
                model.load_state_dict(torch.load(weights_from, weights_only=True))
            trainer = Trainer(
                logger=[logger, recorder],
                callbacks=[ModelCheckpoint(dirpath=folder, every_n_epochs=1, save_top_k=-1)],
                max_epochs=EPOCHS * (2 if resume_from else 1),
                accelerator="cpu",
                devices=1,
                log_every_n_steps=1,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=folder,
            )
        trainer.callbacks.append(Interrupter(interrupt))
        seen = len(recorder.history)
        trainer.fit(model, _data(0), _data(1), ckpt_path=resume_from)
        logged = [
            (step, key, value)
            for step, metrics in recorder.history[seen:]
            for key, value in metrics.items()
        ]
        checkpoints = sorted(folder.glob("*.ckpt"))
        return RunResult(
            logger,
            logger.run_uuid,
            logger.run_id,
            logged,
            checkpoints,
            state=(trainer, model, recorder),
        )

    def save_weights(self, result: RunResult, path: Path) -> Path:
        _, model, _ = result.state
        torch.save(model.state_dict(), path)
        return path

    def log_through(self, tracking: Any, values: dict[str, float], step: int) -> dict[str, str]:
        tracking.log_metrics(values, step)
        tracking.finalize("success")
        return {key: key for key in values}


DRIVER = LightningDriver()
