"""SQLTrackCallback inside the Trainer's own flow: the log history, final/ keys, other callbacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("transformers")

import torch
from _hf_models import TokenData, tiny_config, training_args
from _integration import query
from transformers import BertForMaskedLM, PrinterCallback, Trainer, TrainerCallback

import sqltrack_core as sqltrack
from sqltrack_core.runs import active_runs
from sqltrack_integrations.transformers import SQLTrackCallback

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

#: evaluation and a checkpoint every 2 of the 8 steps; the best checkpoint is the one with the
#: highest eval_loss (the first, as the loss falls), so a final evaluate() of the best model
#: differs from the last in-training evaluation
EVAL_EVERY_2 = {
    "eval_strategy": "steps",
    "eval_steps": 2,
    "save_steps": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_loss",
    "greater_is_better": True,
}
_FRAME_COLUMNS = ("run_id", "step", "logged_at")


def make_trainer(
    output_dir: Path, callbacks: list[TrainerCallback], *, train: bool = True, **args: Any
) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        model=BertForMaskedLM(tiny_config()),
        args=training_args(output_dir, **args),
        train_dataset=TokenData("mlm") if train else None,
        eval_dataset=TokenData("mlm", n=16, seed=1),
        callbacks=callbacks,
    )


def stored(url: str, run_id: int | None) -> dict[tuple[int, str], Any]:
    """(step, key) -> value of every metric the run has in the database (a stored NaN reads
    as missing: the frame cannot tell them apart)."""
    assert run_id is not None
    with sqltrack.connect(url) as tracker:
        frame = tracker.metrics(run_id)
    return {
        (int(row["step"]), str(key)): value
        for row in frame.to_dict("records")
        for key, value in row.items()
        if key not in _FRAME_COLUMNS and not _missing(value)
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same(a: Any, b: Any) -> bool:
    """Equal values; NaN equals NaN (and missing), numbers compare as numbers."""
    if _missing(a) and _missing(b):
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def expected(history: list[dict[str, Any]], trained: int) -> dict[tuple[int, str], Any]:
    """(step, key) -> value of `history`, the entries after the first `trained` under final/,
    final2/, ... (the callback's rule)."""
    found: dict[tuple[int, str], Any] = {}
    for index, entry in enumerate(history):
        step = entry["step"]
        values = {key: value for key, value in entry.items() if key != "step"}
        prefix, number = "", 1
        while index >= trained:
            prefix = "final/" if number == 1 else f"final{number}/"
            if not any((step, prefix + key) in found for key in values):
                break
            number += 1
        for key, value in values.items():
            assert (step, prefix + key) not in found or same(found[step, prefix + key], value)
            found[step, prefix + key] = value
    return found


class Recorder(TrainerCallback):
    """Records every event (each ``on_*`` method) with the global step, the control flags and
    the keys of the logs it saw."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")

            def record(args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                flags = (control.should_log, control.should_evaluate, control.should_save)
                logs = tuple(sorted(kwargs.get("logs") or ()))
                events.append((name, state.global_step, *flags, control.should_training_stop, logs))

            return record
        return object.__getattribute__(self, name)


# -- the log history, stored whole -----------------------------------------------------------


def test_every_logged_value_is_stored_post_training_under_final(
    db_url: str, tmp_path: Path
) -> None:
    """Verify each (step, key, value) of log_history is in the database, a final evaluate()
    of the best model under final/, and eval_loss:min is the in-training minimum."""
    callback = SQLTrackCallback("exp", db_url)
    trainer = make_trainer(tmp_path, [callback], **EVAL_EVERY_2)
    trainer.train()
    trained = len(trainer.state.log_history)
    trainer.evaluate()
    history = trainer.state.log_history
    assert len(history) == trained + 1
    want = expected(history, trained)
    have = stored(db_url, callback.run_id)
    assert sorted(have) == sorted(key for key, value in want.items() if not _missing(value))
    assert [key for key in want if not same(have.get(key), want[key])] == []
    in_training = [e["eval_loss"] for e in history[:trained] if "eval_loss" in e]
    assert len(in_training) == 4 and have[8, "final/eval_loss"] != in_training[-1]
    assert have[8, "eval_loss"] == in_training[-1] and have[8, "final/epoch"] == 2
    with sqltrack.connect(db_url) as tracker:
        best = tracker.runs(metrics=["eval_loss:min", "eval_loss:last"])
    assert best["eval_loss:min"].tolist() == [min(in_training)]
    assert best["eval_loss:last"].tolist() == [in_training[-1]]


@pytest.mark.parametrize(
    ("evaluations", "keys"),
    [
        ([("eval", 1)], ["final/eval_loss"]),
        ([("eval", 1), ("eval", 2)], ["final/eval_loss", "final2/eval_loss"]),
        (
            [("eval", 1), ("eval", 2), ("test", 3)],
            ["final/eval_loss", "final2/eval_loss", "final3/test_loss"],
        ),
    ],
    ids=["one", "two-datasets", "then-another-prefix"],
)
def test_each_evaluate_after_training_keeps_its_values(
    db_url: str, tmp_path: Path, evaluations: list[tuple[str, int]], keys: list[str]
) -> None:
    """Verify post-training evaluate() calls at one step go under final/, final2/, ...: every
    one kept (``epoch`` is in each batch, so a new metric prefix moves on too)."""
    callback = SQLTrackCallback("exp", db_url)
    trainer = make_trainer(tmp_path, [callback])
    trainer.train()
    results = [
        trainer.evaluate(TokenData("mlm", n=8, seed=seed), metric_key_prefix=prefix)
        for prefix, seed in evaluations
    ]
    have = stored(db_url, callback.run_id)
    assert [have[8, key] for key in keys] == [
        result[f"{prefix}_loss"] for result, (prefix, _) in zip(results, evaluations, strict=True)
    ]
    assert not [key for step, key in have if step == 8 and key.startswith(("eval", "test"))]
    assert [have[8, key.split("/")[0] + "/epoch"] for key in keys] == [2] * len(keys)


# -- living with the Trainer and its other callbacks ---------------------------------------------


def test_other_callbacks_see_the_same_events_and_history(db_url: str, tmp_path: Path) -> None:
    """Verify a callback beside ours sees the same events and control flags, and log_history
    is the same (timings aside), as without ours."""
    seen = []
    for callbacks in ([], [SQLTrackCallback("exp", db_url)]):
        recorder = Recorder()
        trainer = make_trainer(
            tmp_path / str(len(callbacks)), [*callbacks, recorder], **EVAL_EVERY_2
        )
        trainer.train()
        trainer.evaluate()
        history = [
            {k: v for k, v in entry.items() if not k.endswith(("_runtime", "_per_second"))}
            for entry in trainer.state.log_history
        ]
        seen.append((recorder.events, history))
    (events, history), (events_with_ours, history_with_ours) = seen
    assert {event[0] for event in events} >= {"on_train_begin", "on_log", "on_save", "on_evaluate"}
    assert events_with_ours == events
    assert history_with_ours == history


def test_total_flos_survives_printer_callback(db_url: str, tmp_path: Path) -> None:
    """Verify add_callback() with disable_tqdm=True (PrinterCallback pops total_flos from the
    logs first) still stores total_flos."""
    trainer = make_trainer(tmp_path, [], disable_tqdm=True)
    callback = SQLTrackCallback("exp", db_url)
    trainer.add_callback(callback)
    order = [type(c) for c in trainer.callback_handler.callbacks]
    assert order.index(PrinterCallback) < order.index(SQLTrackCallback)
    trainer.train()
    have = stored(db_url, callback.run_id)
    assert have[8, "total_flos"] == trainer.state.total_flos > 0
    assert "total_flos" in trainer.state.log_history[-1]


@pytest.mark.parametrize(
    ("run_name", "name"),
    [("eval-only", "eval-only"), (None, None), ("OUTPUT_DIR", None)],
    ids=["named", "unnamed", "output-dir"],
)
def test_an_evaluate_only_run_has_params_and_a_name(
    db_url: str, tmp_path: Path, run_name: str | None, name: str | None
) -> None:
    """Verify a Trainer that only evaluates makes a run named after run_name, with params."""
    if run_name == "OUTPUT_DIR":
        run_name = str(tmp_path)
    callback = SQLTrackCallback("exp", db_url)
    trainer = make_trainer(tmp_path, [callback], train=False, run_name=run_name)
    metrics = trainer.evaluate()
    # nothing ends an evaluate-only run but the process's exit: end it as the exit would
    [run] = [run for run in active_runs() if str(run.uuid) == callback.run_uuid]
    run.finish()
    with sqltrack.connect(db_url) as tracker:
        info = tracker.run_info(callback.run_uuid)
    assert info["name"] == name
    assert info["params.args.learning_rate"] == 1e-3 and info["params.model.hidden_size"] == 32
    have = stored(db_url, callback.run_id)
    assert have[0, "eval_loss"] == metrics["eval_loss"]  # no train(): no final/ prefix


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        ({"save_total_limit": 2, "save_steps": 2}, ["checkpoint-6", "checkpoint-8"]),
        ({**EVAL_EVERY_2, "save_total_limit": 1}, ["checkpoint-2"]),  # the best, at train end
    ],
    ids=["rotation", "best-only"],
)
def test_checkpoints_deleted_by_the_trainer_are_marked_removed(
    db_url: str, tmp_path: Path, args: dict[str, Any], kept: list[str]
) -> None:
    """Verify checkpoint folders save_total_limit deleted get removed_at; kept ones do not."""
    callback = SQLTrackCallback("exp", db_url)
    make_trainer(tmp_path, [callback], **args).train()
    rows = query(db_url, "SELECT path, removed_at FROM checkpoints WHERE path IS NOT NULL")
    assert sorted(Path(path).name for path, _ in rows) == [f"checkpoint-{n}" for n in (2, 4, 6, 8)]
    assert sorted(Path(path).name for path, removed in rows if pd.isna(removed)) == kept
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == kept


def test_a_second_train_goes_on_after_the_runs_steps_checkpoints_too(
    db_url: str, tmp_path: Path
) -> None:
    """Verify a second train() with one callback logs and registers its checkpoints after the
    first's steps, overwriting nothing (Keras does the same for a second fit())."""
    callback = SQLTrackCallback("twice", db_url)
    trainer = make_trainer(tmp_path / "out", [callback], save_steps=2)
    trainer.train()
    first = {step for step, _ in stored(db_url, callback.run_id)}
    trainer.train()
    steps = sorted(step for step, _ in stored(db_url, callback.run_id))
    end = max(first)
    assert {s for s in steps if s <= end} == first and max(steps) > end
    rows = query(
        db_url,
        "SELECT kind, step FROM checkpoints WHERE kind IN ('checkpoint', 'final') ORDER BY id",
    )
    halves = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    assert max(step for _, step in halves[0]) <= end < min(step for _, step in halves[1])
    assert query(db_url, "SELECT count(*) FROM runs") == [(1,)]
