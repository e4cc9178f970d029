"""The contract driver for `SQLTrackKerasCallback`: a tiny Keras 3 model, 2 epochs of 2 batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from _contract_drivers import Interrupt, RunResult, interrupt_at

from sqltrack_integrations.keras import SQLTrackKerasCallback

X = np.random.RandomState(0).randn(32, 8).astype("float32")  # 2 batches of 16
Y = X @ np.linspace(-1, 1, 8, dtype="float32")[:, None]
EPOCHS = 2


def build(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


class Interrupter(keras.callbacks.Callback):
    def __init__(self, interrupt: Interrupt | None) -> None:
        super().__init__()
        self.interrupt = interrupt
        self.steps = 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps += 1
        interrupt_at(self.interrupt, self.steps)


class KerasDriver:
    name = "keras"
    nested_param = ("params.optimizer.learning_rate", 0.05)
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
        first = 0
        if again is not None:  # fit() again: the same model, the same callback
            model, callback = again.state, again.tracking
        else:
            callback = SQLTrackKerasCallback(experiment, url)
            if resume_from is not None:  # "ckpt-<epochs done>.keras"
                model = keras.saving.load_model(resume_from)
                first = int(resume_from.stem.split("-")[1])
            else:
                model = build()
                if weights_from is not None:
                    model.load_weights(weights_from)
        checkpoint = keras.callbacks.ModelCheckpoint(str(folder / "ckpt-{epoch}.keras"))
        history = model.fit(
            X,
            Y,
            batch_size=16,
            epochs=first + EPOCHS,
            initial_epoch=first,
            shuffle=False,
            verbose=0,
            callbacks=[callback, checkpoint, Interrupter(interrupt)],
        )
        logged = [
            (epoch, key, values[index])
            for index, epoch in enumerate(history.epoch)
            for key, values in history.history.items()
        ]
        checkpoints = sorted(folder.glob("ckpt-*.keras"), key=lambda p: int(p.stem.split("-")[1]))
        return RunResult(
            callback, callback.run_uuid, callback.run_id, logged, checkpoints, state=model
        )

    def save_weights(self, result: RunResult, path: Path) -> Path:
        file = path.with_name(path.name + ".weights.h5")
        result.state.save_weights(file)
        return file

    def log_through(self, tracking: Any, values: dict[str, float], step: int) -> dict[str, str]:
        tracking.on_epoch_end(step, logs=dict(values))
        tracking.on_train_end()
        return {key: key for key in values}


DRIVER = KerasDriver()
