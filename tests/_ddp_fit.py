"""Run by test_lightning.py in a subprocess: fit a tiny model with strategy="ddp" on 2 CPU processes.

Lightning's ddp launcher re-runs this script for rank 1, which is why it cannot run inside pytest.
Usage: python _ddp_fit.py URL ROOT_DIR
"""

from __future__ import annotations

import sys
import warnings

from _lightning_models import TinyModel, regression_data
from lightning.pytorch import Trainer, seed_everything

from sqltrack_integrations.lightning import SQLTrackLogger

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    url, root = sys.argv[1], sys.argv[2]
    seed_everything(0)
    logger = SQLTrackLogger("ddp", url)
    trainer = Trainer(
        logger=logger,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
    if trainer.is_global_zero:
        print(f"RUN {logger.version}")
