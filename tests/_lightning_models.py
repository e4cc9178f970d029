"""Tiny Lightning modules and synthetic data for the integration tests (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def regression_data(
    n: int = 64, features: int = 8, seed: int = 0, batch_size: int = 16
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x @ torch.linspace(-1.0, 1.0, features).unsqueeze(1) + 0.1 * torch.randn(
        n, 1, generator=generator
    )
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def make_trainer(tmp_path: Path, logger: Any, **kwargs: Any) -> Trainer:
    """A quiet CPU Trainer of 2 epochs in `tmp_path`; `kwargs` override its options."""
    options: dict[str, Any] = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "default_root_dir": tmp_path,
    }
    options.update(kwargs)
    return Trainer(logger=logger, **options)


class TinyModel(LightningModule):
    """A backbone (two linear layers) and a head; `freeze_backbone` fine-tunes the head only."""

    def __init__(
        self,
        features: int = 8,
        hidden: int = 16,
        outputs: int = 1,
        lr: float = 0.05,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(
            nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden)
        )
        self.head = nn.Linear(hidden, outputs)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.backbone(x)))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x)[:, :1], y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self(x)[:, :1], y))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test/loss", nn.functional.mse_loss(self(x)[:, :1], y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.hparams.lr)


class RegressionData(LightningDataModule):
    """`regression_data` as a datamodule, for LightningCLI."""

    def __init__(self, n: int = 64, batch_size: int = 16) -> None:
        super().__init__()
        self.n = n
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return regression_data(self.n, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return regression_data(self.n, seed=1, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return regression_data(self.n, seed=2, batch_size=self.batch_size)
