"""Tiny BERT models from configs and synthetic token data for the Hugging Face tests (no hub)."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import BertConfig, TrainingArguments


def tiny_config(**overrides: Any) -> BertConfig:
    settings: dict[str, Any] = {
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
    }
    settings.update(overrides)
    return BertConfig(**settings)


class TokenData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token ids; `task` 'mlm' (labels: the ids) or 'classify' (labels: 3 classes)."""

    def __init__(self, task: str, n: int = 32, length: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 64, (n, length), generator=generator)
        self.task = task

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.ids[index]
        if self.task == "mlm":
            return {"input_ids": ids, "labels": ids.clone()}
        return {"input_ids": ids, "labels": ids.sum() % 3}


def training_args(output_dir: str | os.PathLike[str], **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "num_train_epochs": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 4,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)
