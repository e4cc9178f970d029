"""Hugging Face: pre-train a tiny BERT, fine-tune it with a new head, resume: lineage for free.

Nothing here tells sqltrack how the three runs relate. `SQLTrackCallback` puts a token on
``model.config`` and next to every ``checkpoint-N/``, and registers weight fingerprints; the
fine-tune is recognised by its weights, the resumed job by the checkpoint's token. No hub
access: the model is built from a config and trained on synthetic token ids. Run it from
anywhere (about 20 s on 2 CPU cores); it writes ``sqltrack.db`` in the working directory (or
wherever ``$SQLTRACK_URL`` points) and its model folders to a temporary folder::

    HF_HUB_OFFLINE=1 python examples/hf_pretrain_finetune.py
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _lineage import print_lineage
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

import sqltrack_core as sqltrack
from sqltrack_integrations.transformers import SQLTrackCallback


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Synthetic sentences: token ids with a little structure, for masked LM or classification."""

    def __init__(self, task: str, n: int = 256, length: int = 24, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        start = torch.randint(5, 200, (n, 1), generator=generator)
        self.ids = (
            start + torch.arange(length) * torch.randint(1, 4, (n, 1), generator=generator)
        ) % 250 + 5
        self.task = task

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.ids[index]
        if self.task == "mlm":
            masked = ids.clone()
            masked[::5] = 4  # the [MASK] id of this toy vocabulary
            return {"input_ids": masked, "labels": ids}
        return {"input_ids": ids, "labels": (ids[1] - ids[0]) % 3}  # the step between tokens


def arguments(folder: Path, epochs: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        logging_steps=8,
        save_strategy="steps",
        save_steps=16,
        save_total_limit=2,
        eval_strategy="epoch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


class WallTimeLimit(TrainerCallback):
    """Stop after `steps` optimizer steps, as a job with a wall-time limit does."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.steps:
            control.should_training_stop = True
            control.should_save = True


def quiet(trainer: Trainer) -> Trainer:
    trainer.remove_callback(PrinterCallback)  # the metrics go to the database instead
    return trainer


def classifier(root: Path, callbacks: list[TrainerCallback]) -> Trainer:
    """The fine-tuning job: the pre-trained folder under a new 3-class head."""
    model = BertForSequenceClassification.from_pretrained(root / "tiny-bert", num_labels=3)
    return quiet(
        Trainer(
            model=model,
            args=arguments(root / "finetune", epochs=4),
            train_dataset=Tokens("classify", seed=2),
            eval_dataset=Tokens("classify", n=64, seed=3),
            callbacks=callbacks,
        )
    )


def main() -> None:
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = Path(tempfile.mkdtemp(prefix="sqltrack-hf-"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
    )

    # 1. Masked-LM pre-training, saved with save_pretrained.
    pretrain = SQLTrackCallback("example-hf-pretrain", name="tiny-bert")
    trainer = quiet(
        Trainer(
            model=BertForMaskedLM(config),
            args=arguments(root / "pretrain", epochs=3),
            train_dataset=Tokens("mlm"),
            eval_dataset=Tokens("mlm", n=64, seed=1),
            callbacks=[pretrain],
        )
    )
    trainer.train()
    trainer.save_model(str(root / "tiny-bert"))  # config.json carries the run's token

    # 2. Fine-tune for classification from that folder (a new head); the job hits its time limit.
    finetune = SQLTrackCallback("example-hf-finetune", name="classifier")
    classifier(root, [finetune, WallTimeLimit(steps=20)]).train()
    print("fine-tune stopped at its time limit, step 20")

    # 3. The next job resumes from the last checkpoint: a new run, linked to the one it resumes.
    resumed = SQLTrackCallback("example-hf-finetune", name="classifier (resumed)")
    classifier(root, [resumed]).train(
        resume_from_checkpoint=str(root / "finetune" / "checkpoint-20")
    )

    with sqltrack.connect() as tracker:
        print_lineage(tracker, resumed.run_uuid)
    print(f"\nmodel folders are in {root}")


if __name__ == "__main__":
    main()
