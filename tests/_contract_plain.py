"""The contract driver for examples/plain_loop_adapter.py: a hand-written PyTorch loop."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from _contract_drivers import Interrupt, RunResult, interrupt_at
from _integration import EXAMPLES
from torch import nn


def _load_example() -> Any:
    """examples/plain_loop_adapter.py as the module ``plain_loop_adapter`` (so it pickles)."""
    name = "plain_loop_adapter"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


PlainLoopTracker = _load_example().PlainLoopTracker
STEPS = 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


class PlainDriver:
    name = "plain"
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
        if again is not None:
            tracker, (model, optimizer) = again.tracking, again.state
        else:
            params = {"optim": {"name": "sgd", "lr": 0.05}}
            tracker = PlainLoopTracker(experiment, url, params=params, resume_from=resume_from)
            model = _model()
            if weights_from is not None:
                model.load_state_dict(torch.load(weights_from, weights_only=True))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        logged: list[tuple[int, str, Any]] = []
        checkpoints = []
        generator = torch.Generator().manual_seed(1)
        with tracker:
            first = tracker.start(model, optimizer)
            for step in range(first, first + STEPS):
                x = torch.randn(16, 8, generator=generator)
                loss = nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                values = {"train/loss": loss.item(), "epoch": step // 2}
                tracker.log(values, step)
                logged += [(step, key, value) for key, value in values.items()]
                interrupt_at(interrupt, step + 1)
                if step % 2 == 1:
                    path = folder / f"step-{step}.pt"
                    tracker.save_checkpoint(path, model, optimizer, step)
                    checkpoints.append(path)
        run = tracker.run
        return RunResult(
            tracker, str(run.uuid), run.id, logged, checkpoints, state=(model, optimizer)
        )

    def save_weights(self, result: RunResult, path: Path) -> Path:
        model, _ = result.state
        torch.save(model.state_dict(), path)
        return path

    def log_through(self, tracking: Any, values: dict[str, float], step: int) -> dict[str, str]:
        with tracking:
            tracking.log(values, step)
        return {key: key for key in values}


DRIVER = PlainDriver()
