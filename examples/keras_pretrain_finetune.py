"""Keras 3 (torch backend): pre-train, save a .keras file, load it, new head, fine-tune, resume.

Nothing here tells sqltrack how the runs relate: `SQLTrackKerasCallback` fingerprints the
weights each run starts from and registers every file the model saves (with a token inside).
Runs on synthetic data in a few seconds; it writes ``sqltrack.db`` in the working directory (or
wherever ``$SQLTRACK_URL`` points) and its model files to a temporary folder::

    python examples/keras_pretrain_finetune.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported: no TensorFlow here

import keras
import numpy as np
from _lineage import print_lineage

import sqltrack_core as sqltrack
from sqltrack_integrations.keras import SQLTrackKerasCallback, read_keras_token


def data(outputs: int, seed: int, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic regression: `outputs` smooth functions of 16 random features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype("float32")
    y = np.tanh(x @ rng.standard_normal((16, outputs))).astype("float32")
    return x, y


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sqltrack-keras-"))
    keras.utils.set_random_seed(0)

    # 1. Pre-train on task A and save the whole model.
    inputs = keras.Input((16,))
    x = keras.layers.Dense(64, activation="relu", name="backbone_1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="backbone_2")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x), name="backbone")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    pretrain = SQLTrackKerasCallback("example-keras-pretrain")
    model.fit(*data(1, seed=0), epochs=5, batch_size=32, verbose=0, callbacks=[pretrain])
    model.save(root / "backbone.keras")
    print(f"backbone.keras names its run offline: {read_keras_token(root / 'backbone.keras')}")

    # 2. Load it, put a new head on the backbone, fine-tune on task B; checkpoint every epoch.
    base = keras.saving.load_model(root / "backbone.keras")
    head = keras.layers.Dense(3, name="new_head")(base.get_layer("backbone_2").output)
    classifier = keras.Model(base.input, head, name="new-head")
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    finetune = SQLTrackKerasCallback("example-keras-finetune")
    checkpoints = keras.callbacks.ModelCheckpoint(str(root / "finetune-{epoch}.keras"))
    classifier.fit(
        *data(3, seed=1), epochs=3, batch_size=32, verbose=0, callbacks=[finetune, checkpoints]
    )

    # 3. A later job resumes from the epoch-3 file with initial_epoch: a new run, resumed_from.
    restored = keras.saving.load_model(root / "finetune-3.keras")
    resumed = SQLTrackKerasCallback("example-keras-finetune", name="new-head (resumed)")
    restored.fit(
        *data(3, seed=1), initial_epoch=3, epochs=6, batch_size=32, verbose=0, callbacks=[resumed]
    )

    with sqltrack.connect() as tracker:
        print_lineage(tracker, resumed.run_uuid)
    print(f"\nmodel files are in {root}")


if __name__ == "__main__":
    main()
