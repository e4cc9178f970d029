"""Tiny torch models, real training steps and a tracked pre-training run, for provenance tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sqltrack_core as sqltrack


def mlp(seed: int, head: int = 4) -> Any:
    """A tiny model: a 2-layer backbone (0, 2) and a head (4), initialised from `seed`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, head)
    )


def train(model: Any, only: Callable[[str], bool] = lambda name: True, seed: int = 99) -> None:
    """A few real SGD steps on synthetic data, updating only the parameters `only` selects."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(only(name))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    dtype = next(model.parameters()).dtype  # a bfloat16 model trains on bfloat16 inputs
    for _ in range(3):
        x = torch.randn(16, 32).to(dtype)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)


def head(name: str) -> bool:
    return name.startswith("4.")


def state(model: Any) -> dict[str, Any]:
    """A detached copy of the model's state dict, as a checkpoint file would hold it."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def links_of(
    tracker: sqltrack.Tracker, run: sqltrack.Run | int
) -> dict[tuple[str, int], dict[str, Any]]:
    """The run_links rows from `run` (a Run or its id): (kind, to_run_id) -> evidence."""
    run_id = run.id if isinstance(run, sqltrack.Run) else run
    df = tracker.query(
        "SELECT kind, to_run_id, evidence FROM run_links WHERE from_run_id = ?", [run_id]
    )
    return {
        (kind, int(to)): ev if isinstance(ev, dict) else json.loads(ev)
        for kind, to, ev in df.itertuples(index=False)
    }


def pretrain(tracker: sqltrack.Tracker, tmp_path: Path, seed: int = 0) -> tuple[Any, int, dict]:
    """A pre-training run: fresh weights, trained, checkpointed. Returns (model, run id, token)."""
    model = mlp(seed)
    with tracker.start_run("pretrain") as run:
        assert run.link_from_weights(model.state_dict()) == []
        train(model)
        token = run.register_checkpoint(tmp_path / "base.pt", model.state_dict(), step=3)
    return model, run.id, token
