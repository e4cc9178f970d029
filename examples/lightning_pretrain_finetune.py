"""Pre-train, fine-tune with a new head, resume the interrupted fine-tune: lineage for free.

Nothing here tells sqltrack how the three runs relate. `SQLTrackLogger` registers and tokens
every checkpoint; the fine-tune's weights are recognised by their fingerprints, and the resumed
job by the token inside ``last.ckpt``. Run it from anywhere (about 15 s on 2 CPU cores); it writes
``sqltrack.db`` in the working directory (or wherever ``$SQLTRACK_URL`` points) and its
checkpoints to a temporary folder::

    python examples/lightning_pretrain_finetune.py
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch
from _lineage import print_lineage
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sqltrack_core as sqltrack
from sqltrack_integrations.lightning import SQLTrackLogger


class Regressor(LightningModule):
    """A small backbone and a head; fine-tuning swaps the head for a new task's."""

    def __init__(self, features: int = 16, hidden: int = 64, outputs: int = 1, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)


def task(outputs: int, seed: int, n: int = 512) -> tuple[DataLoader, DataLoader]:
    """Synthetic regression: `outputs` smooth functions of 16 random features."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=generator)
    weights = torch.randn(16, outputs, generator=generator)
    y = torch.tanh(x @ weights) + 0.05 * torch.randn(n, outputs, generator=generator)
    split = n * 3 // 4
    return (
        DataLoader(TensorDataset(x[:split], y[:split]), batch_size=32, shuffle=True),
        DataLoader(TensorDataset(x[split:], y[split:]), batch_size=64),
    )


class Preempted(Callback):
    """Stop the job after `steps` optimizer steps the way a cluster does: with SIGTERM."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            raise SIGTERMException()


def trainer(root: Path, logger: SQLTrackLogger, **kwargs: object) -> Trainer:
    return Trainer(
        logger=logger,
        default_root_dir=root,
        accelerator="cpu",
        log_every_n_steps=4,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,  # type: ignore[arg-type]
    )


def main() -> None:
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and logging intervals
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="sqltrack-lightning-"))
    seed_everything(0)

    # 1. Pre-train on task A.
    pretrain = SQLTrackLogger("example-pretrain", name="backbone")
    fit = trainer(root, pretrain, max_epochs=4)
    fit.fit(Regressor(), *task(outputs=1, seed=0))
    base_checkpoint = fit.checkpoint_callback.best_model_path  # type: ignore[union-attr]

    # 2. Fine-tune on task B with a new head, checkpointing every 10 steps; preempted at step 25.
    model = Regressor.load_from_checkpoint(base_checkpoint, lr=0.02)
    model.head = nn.Linear(64, 3)
    finetune = SQLTrackLogger("example-finetune", name="new-head")
    checkpoints = ModelCheckpoint(every_n_train_steps=10, save_last=True)
    job = trainer(root, finetune, max_epochs=4, callbacks=[checkpoints, Preempted(steps=25)])
    try:
        job.fit(model, *task(outputs=3, seed=1))
    except SIGTERMException:
        print(f"fine-tune preempted at step {job.global_step}; its run reads as cancelled")

    # 3. The requeued job resumes from last.ckpt: a new run, linked to the one it resumes.
    model = Regressor(outputs=3, lr=0.02)
    resumed = SQLTrackLogger("example-finetune", name="new-head (resumed)")
    trainer(root, resumed, max_epochs=4).fit(
        model, *task(outputs=3, seed=1), ckpt_path=checkpoints.last_model_path
    )

    with sqltrack.connect() as tracker:
        print_lineage(tracker, resumed.version)
    print(f"\ncheckpoints are in {root}")


if __name__ == "__main__":
    main()
