"""Run by test_lightning.py in a subprocess, for what cannot run inside pytest.

- ``ddp``: fit with strategy="ddp" on 2 CPU processes (the launcher re-runs this script for
  rank 1, which would re-run pytest);
- ``sigterm``: fit that receives a real SIGTERM at step 3 (Lightning stops gracefully).

Usage: python _lightning_script.py MODE URL ROOT_DIR
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Any

from _lightning_models import TinyModel, regression_data
from lightning.pytorch import Callback, Trainer, seed_everything

from sqltrack_integrations.lightning import SQLTrackLogger


class SelfTerminate(Callback):
    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    mode, url, root = sys.argv[1:4]
    seed_everything(0)
    logger = SQLTrackLogger(mode, url)
    print(f"RUN {logger.version}", flush=True)
    trainer = Trainer(
        logger=logger,
        strategy="ddp" if mode == "ddp" else "auto",
        devices=2 if mode == "ddp" else 1,
        callbacks=[SelfTerminate()] if mode == "sigterm" else [],
        accelerator="cpu",
        max_epochs=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
