"""The contract driver for the Hugging Face `SQLTrackCallback`: a tiny BERT, 2 epochs of 2 steps."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from _contract_drivers import Interrupt, RunResult, interrupt_at
from _hf_models import TokenData, tiny_config, training_args
from transformers import (
    BertForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from sqltrack_integrations.transformers import SQLTrackCallback


class Watcher(TrainerCallback):
    """Interrupts training at a step; notes how much of ``log_history`` a resume restored;
    logs an int through ``trainer.log`` at each epoch's end, as a script's callback would."""

    def __init__(self, trainer: Trainer, interrupt: Interrupt | None) -> None:
        self.trainer = trainer
        self.interrupt = interrupt
        self.restored = 0

    def on_train_begin(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        self.restored = len(state.log_history)

    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        interrupt_at(self.interrupt, state.global_step)

    def on_epoch_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        self.trainer.log({"epochs_done": round(state.epoch or 0)})


class TransformersDriver:
    name = "transformers"
    nested_param = ("params.model.hidden_size", 32)
    int_key = "epochs_done"

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
        if again is not None:  # train() again on the same Trainer
            trainer = again.state
            callback = again.tracking
        else:
            callback = SQLTrackCallback(experiment, url)
            torch.manual_seed(0)
            if weights_from is not None:
                model = BertForMaskedLM.from_pretrained(weights_from)
            else:
                model = BertForMaskedLM(tiny_config())
            # a resumed run writes where the checkpoint lives, as a requeued job does
            output = folder / "out" if resume_from is None else resume_from.parent
            args = training_args(output, save_steps=2)
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=TokenData("mlm", n=16),  # 2 steps of 8 an epoch
                callbacks=[callback],
            )
        watcher = Watcher(trainer, interrupt)
        trainer.add_callback(watcher)
        trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
        trainer.remove_callback(watcher)
        logged = [
            (entry["step"], key, value)
            for entry in trainer.state.log_history[watcher.restored :]
            for key, value in entry.items()
            if key != "step"
        ]
        output = Path(trainer.args.output_dir)
        checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return RunResult(
            callback, callback.run_uuid, callback.run_id, logged, checkpoints, state=trainer
        )

    def save_weights(self, result: RunResult, path: Path) -> Path:
        result.state.model.save_pretrained(path)
        return path

    def log_through(self, tracking: Any, values: dict[str, float], step: int) -> dict[str, str]:
        args = TrainingArguments(output_dir=tempfile.gettempdir(), report_to="none", use_cpu=True)
        state, control = TrainerState(global_step=step), TrainerControl()
        tracking.on_log(args, state, control, logs=dict(values))
        tracking.on_train_end(args, state, control)
        # values logged after train() ended go under final/ (the callback's docstring)
        return {key: f"final/{key}" for key in values}


DRIVER = TransformersDriver()
