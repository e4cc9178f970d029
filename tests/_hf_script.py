"""Run by test_transformers.py in a subprocess: a train() that raises at step 3, to see how the
run ends when the process exits. Usage: python _hf_script.py MODE URL OUTPUT_DIR, where MODE is
``caught`` (the script catches the error and exits normally), ``uncaught`` or ``ctrl-c``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from _hf_models import TokenData, tiny_config, training_args
from transformers import BertForMaskedLM, Trainer, TrainerCallback

from sqltrack_integrations.transformers import SQLTrackCallback


class Boom(TrainerCallback):
    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 3:
            raise self.exception


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    mode, url, output_dir = sys.argv[1:4]
    callback = SQLTrackCallback("exit", url)
    print(f"RUN {callback.run_uuid}", flush=True)
    error = KeyboardInterrupt() if mode == "ctrl-c" else RuntimeError("boom")
    trainer = Trainer(
        model=BertForMaskedLM(tiny_config()),
        args=training_args(output_dir),
        train_dataset=TokenData("mlm"),
        callbacks=[callback, Boom(error)],
    )
    if mode == "caught":
        try:
            trainer.train()
        except RuntimeError:
            print("caught", flush=True)
    else:
        trainer.train()
