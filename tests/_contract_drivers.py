"""The adapters under the contract suite (test_adapter_contract.py), one driver each.

A driver trains a tiny model through its framework with its adapter attached, and reports what
the framework itself reported (Lightning's loggers, Hugging Face's ``log_history``, Keras'
``History``, the plain loop's own list), so the scenarios can hold the database against it.
A new adapter gets the whole suite by adding a ``tests/_contract_<name>.py`` module with a
`Driver` named ``DRIVER``, and its name to `DRIVERS`. Framework imports stay inside those
modules: a subprocess (tests/_contract_script.py) imports only the one it drives.
"""

from __future__ import annotations

import importlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["DRIVERS", "Driver", "Interrupt", "RunResult", "interrupt_at", "load_driver"]

#: driver name -> the module that holds its DRIVER
DRIVERS = {
    "lightning": "_contract_lightning",
    "transformers": "_contract_hf",
    "keras": "_contract_keras",
    "plain": "_contract_plain",
}

#: what to do to training at an optimizer step (1-based): raise RuntimeError("boom"), or
#: send this process a real SIGTERM
Interrupt = tuple[Literal["raise", "sigterm"], int]


@dataclass
class RunResult:
    """One training through an adapter, as the framework saw it."""

    tracking: Any  # the logger / callback / tracker object, after training
    uuid: str  # its run's UUID
    run_id: int | None  # its run's id (None: the database was never reached)
    #: (step, key, value) as the framework reported them, in order
    logged: list[tuple[int, str, Any]]
    #: resumable checkpoints the framework wrote (with a token), oldest first
    checkpoints: list[Path] = field(default_factory=list)
    #: what training again with the same object needs (trainer, model, optimizer)
    state: Any = None


class Driver(Protocol):
    """What the contract scenarios need of an adapter."""

    name: str
    #: a params key as ``run_info`` flattens it (``params.a.b``: nested) and the value there
    nested_param: tuple[str, Any]
    #: a key the framework reports as an int (stored BIGINT)
    int_key: str

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
        """Train a tiny model for a few steps with a new adapter object, writing under `folder`.

        `again`: train on with that result's adapter object, model and trainer (a second
        ``fit()``/``train()``); `resume_from`: resume from one of its checkpoints (optimizer
        and loop state restored); `weights_from`: start from a weights-only file that
        `save_weights` wrote; `interrupt`: raise, or be sent SIGTERM, at that step.
        """
        ...

    def save_weights(self, result: RunResult, path: Path) -> Path:
        """Save `result`'s trained weights the framework's weights-only way, without the
        adapter's help; return the file (or folder) to pass as `weights_from`."""
        ...

    def log_through(self, tracking: Any, values: dict[str, float], step: int) -> dict[str, str]:
        """Log `values` at `step` through `tracking` the way its framework calls it, then end
        that stage as the framework would; return {key logged: key the adapter stores it as}."""
        ...


def load_driver(name: str) -> Driver:
    """The driver called `name` (importing its framework now)."""
    driver: Driver = importlib.import_module(DRIVERS[name]).DRIVER
    return driver


def interrupt_at(interrupt: Interrupt | None, step: int) -> None:
    """Apply `interrupt` if training has just reached optimizer step `step`."""
    if interrupt is None or interrupt[1] != step:
        return
    if interrupt[0] == "raise":
        raise RuntimeError("boom")
    os.kill(os.getpid(), signal.SIGTERM)
