"""SQLTrackCallback with real (tiny, config-built) Hugging Face Trainers on both backends."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from _hf_models import TokenData, tiny_config, training_args
from _integration import TESTS, links, query, run_example, run_python
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
)

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError
from sqltrack_core.errors import SQLTrackWarning
from sqltrack_integrations.transformers import SIDECAR, SQLTrackCallback

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def train(
    model: Any,
    url: str,
    output_dir: Path,
    *,
    task: str,
    experiment: str = "exp",
    resume: str | None = None,
    callback_kwargs: dict[str, Any] | None = None,
    callbacks: list[TrainerCallback] | None = None,
    **args: Any,
) -> tuple[SQLTrackCallback, Trainer]:
    callback = SQLTrackCallback(experiment, url, **(callback_kwargs or {}))
    trainer = Trainer(
        model=model,
        args=training_args(output_dir, **args),
        train_dataset=TokenData(task),
        eval_dataset=TokenData(task, n=16, seed=1),
        callbacks=[callback, *(callbacks or [])],
    )
    trainer.train(resume_from_checkpoint=resume)
    return callback, trainer


def pretrain(tmp_path: Path, url: str, seed: int = 0) -> tuple[SQLTrackCallback, Path]:
    """Masked-LM pre-training, then save_pretrained into tmp_path/base."""
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_config())
    callback, trainer = train(model, url, tmp_path / "pre-out", task="mlm", experiment="pretrain")
    trainer.save_model(str(tmp_path / "base"))
    return callback, tmp_path / "base"


class StopAt(TrainerCallback):
    """Stop training after 4 steps (a job that hits its time limit)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 4:
            control.should_training_stop = True


# -- the run, params and metrics ----------------------------------------------------------------


def test_train_eval_and_summary_keys_land_as_typed_columns(db_url: str, tmp_path: Path) -> None:
    """Verify train, eval and summary keys are columns at their global steps, params JSON-safe."""

    class UserLogs(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            trainer.log({"note": "epoch done", "extra": {"a": [1, 2]}, "flag": True})

    torch.manual_seed(0)
    callback = SQLTrackCallback("exp", db_url, tags=["hf"])
    trainer = Trainer(
        model=BertForMaskedLM(tiny_config()),
        args=training_args(tmp_path, eval_strategy="steps", eval_steps=4, hub_token="secret"),
        train_dataset=TokenData("mlm"),
        eval_dataset=TokenData("mlm", n=16, seed=1),
        callbacks=[callback, UserLogs()],
    )
    trainer.train()
    with sqltrack.connect(db_url) as tracker:
        info = tracker.run_info(callback.run_uuid)
        frame = tracker.metrics(info["id"]).set_index("step")
    assert info["status"] == "completed" and info["tags"] == ["hf"]
    assert info["params.args.learning_rate"] == 1e-3 and info["params.model.hidden_size"] == 32
    assert not [key for key in info if "hub_token" in key]
    assert "params.model.sqltrack" not in info
    # 32 samples / batch 8 = 4 steps per epoch, 2 epochs
    assert list(frame["loss"].dropna().index) == list(range(1, 9))
    assert frame["grad_norm"].notna().sum() == 8 and frame["learning_rate"].notna().sum() == 8
    assert list(frame["eval_loss"].dropna().index) == [4, 8]
    assert frame.loc[8, "train_runtime"] > 0 and frame.loc[8, "train_loss"] > 0
    assert frame.loc[4, "note"] == "epoch done" and frame.loc[4, "extra"] == {"a": [1, 2]}
    assert bool(frame.loc[4, "flag"]) is True
    types = dict(query(db_url, "SELECT key, sql_type FROM metric_columns"))
    assert types["loss"] in ("REAL", "DOUBLE PRECISION") and types["note"] == "TEXT"


def test_evaluate_after_train_lands_in_the_finished_run(db_url: str, tmp_path: Path) -> None:
    """Verify trainer.evaluate() after train() logs into the same run, under final/, and the
    run stays completed."""
    torch.manual_seed(0)
    _, trainer = train(BertForMaskedLM(tiny_config()), db_url, tmp_path, task="mlm")
    trainer.evaluate()
    rows = query(db_url, "SELECT id, status FROM runs")
    assert [r[1] for r in rows] == ["completed"]
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(rows[0][0]).set_index("step")
    assert frame.loc[8, "final/eval_loss"] > 0 and frame.loc[8, "final/epoch"] == 2
    assert "eval_loss" not in frame


def test_checkpoints_get_a_sidecar_and_a_config_token(db_url: str, tmp_path: Path) -> None:
    """Verify each checkpoint-N/ is registered with sqltrack.json and the token in config.json."""
    torch.manual_seed(0)
    callback, _ = train(
        BertForMaskedLM(tiny_config()), db_url, tmp_path, task="mlm", save_total_limit=1
    )
    folder = tmp_path / "checkpoint-8"
    sidecar = json.loads((folder / SIDECAR).read_text())
    config = json.loads((folder / "config.json").read_text())
    assert sidecar == config["sqltrack"] and sidecar["run_uuid"] == callback.run_uuid
    assert sidecar["step"] == 8
    assert "sqltrack" not in json.loads((folder / "trainer_state.json").read_text())
    registered = query(db_url, "SELECT path, step, uuid FROM checkpoints WHERE path IS NOT NULL")
    assert sorted((Path(p).name, s) for p, s, _ in registered) == [
        ("checkpoint-4", 4),
        ("checkpoint-8", 8),
    ]
    assert sidecar["checkpoint_uuid"] in {str(u) for _, _, u in registered}
    assert not (tmp_path / "checkpoint-4").exists()  # rotated away, still registered


# -- provenance links -----------------------------------------------------------------------------


def test_from_pretrained_with_a_new_head_links_finetuned_from(db_url: str, tmp_path: Path) -> None:
    """Verify sequence classification from a saved MLM directory links finetuned_from."""
    base, directory = pretrain(tmp_path, db_url)
    model = BertForSequenceClassification.from_pretrained(directory, num_labels=3)
    callback, _ = train(model, db_url, tmp_path / "ft", task="classify", experiment="finetune")
    found = links(db_url, callback.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    assert found[("finetuned_from", base.run_id)]["method"] == "fingerprint"


def test_a_copied_model_directory_still_links(db_url: str, tmp_path: Path) -> None:
    """Verify a saved model directory copied elsewhere links to the run that trained it."""
    base, directory = pretrain(tmp_path, db_url)
    copied = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(directory, copied)
    shutil.rmtree(directory)
    model = BertForMaskedLM.from_pretrained(copied)
    callback, _ = train(model, db_url, tmp_path / "ft", task="mlm", experiment="finetune")
    assert list(links(db_url, callback.run_id)) == [("finetuned_from", base.run_id)]


def test_a_fresh_model_from_a_tracked_config_links_nothing(db_url: str, tmp_path: Path) -> None:
    """Verify a config carrying a token, on freshly initialised weights, creates no link."""
    base, directory = pretrain(tmp_path, db_url)
    config = BertForMaskedLM.from_pretrained(directory).config
    assert config.sqltrack["run_uuid"] == base.run_uuid
    torch.manual_seed(1)
    callback, _ = train(BertForMaskedLM(config), db_url, tmp_path / "fresh", task="mlm")
    assert links(db_url, callback.run_id) == {}


def test_resume_from_checkpoint_links_resumed_from_by_token(db_url: str, tmp_path: Path) -> None:
    """Verify train(resume_from_checkpoint=...) makes a new run linked resumed_from by token."""

    torch.manual_seed(0)
    first, _ = train(
        BertForMaskedLM(tiny_config()), db_url, tmp_path, task="mlm", callbacks=[StopAt()]
    )
    sidecar = json.loads((tmp_path / "checkpoint-4" / SIDECAR).read_text())
    torch.manual_seed(5)
    second, trainer = train(
        BertForMaskedLM(tiny_config()),
        db_url,
        tmp_path,
        task="mlm",
        resume=str(tmp_path / "checkpoint-4"),
    )
    assert trainer.state.global_step == 8
    assert links(db_url, second.run_id) == {
        ("resumed_from", first.run_id): {
            "method": "token",
            "checkpoint_uuid": sidecar["checkpoint_uuid"],
            "step": 4,
            "path": str(tmp_path / "checkpoint-4"),
        }
    }


def test_resume_from_a_copied_checkpoint_links_resumed_from_by_weights(
    db_url: str, tmp_path: Path
) -> None:
    """Verify resuming from a checkpoint folder copied out of the output dir still links."""
    torch.manual_seed(0)
    first, _ = train(BertForMaskedLM(tiny_config()), db_url, tmp_path / "a", task="mlm")
    copied = tmp_path / "moved" / "step-4"
    shutil.copytree(tmp_path / "a" / "checkpoint-4", copied)
    shutil.rmtree(tmp_path / "a")
    second, trainer = train(
        BertForMaskedLM(tiny_config()), db_url, tmp_path / "b", task="mlm", resume=str(copied)
    )
    assert trainer.state.global_step == 8
    found = links(db_url, second.run_id)
    assert list(found) == [("resumed_from", first.run_id)]
    assert found[("resumed_from", first.run_id)]["method"] == "fingerprint"


def test_resume_continue_goes_on_in_the_checkpoints_run(db_url: str, tmp_path: Path) -> None:
    """Verify resume="continue" logs the resumed steps into the original run."""

    torch.manual_seed(0)
    first, _ = train(
        BertForMaskedLM(tiny_config()), db_url, tmp_path, task="mlm", callbacks=[StopAt()]
    )
    second, _ = train(
        BertForMaskedLM(tiny_config()),
        db_url,
        tmp_path,
        task="mlm",
        resume=str(tmp_path / "checkpoint-4"),
        callback_kwargs={"resume": "continue"},
    )
    assert second.run_id == first.run_id
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(first.run_id)
    assert list(frame.dropna(subset=["loss"])["step"]) == list(range(1, 9))


def test_two_finetunes_of_one_base_link_to_it_not_each_other(db_url: str, tmp_path: Path) -> None:
    """Verify two fine-tunes of one base each link to the base only."""
    base, directory = pretrain(tmp_path, db_url)
    for name in ("ft1", "ft2"):
        model = BertForSequenceClassification.from_pretrained(directory, num_labels=3)
        callback, trainer = train(model, db_url, tmp_path / name, task="classify", experiment=name)
        trainer.save_model(str(tmp_path / f"{name}-model"))
        assert list(links(db_url, callback.run_id)) == [("finetuned_from", base.run_id)]


def test_partial_load_links_initialized_from(db_url: str, tmp_path: Path) -> None:
    """Verify loading only the embeddings of a base links initialized_from with the fraction."""
    base, directory = pretrain(tmp_path, db_url)
    trained = BertForMaskedLM.from_pretrained(directory)
    torch.manual_seed(3)
    model = BertForMaskedLM(tiny_config())
    model.bert.embeddings.load_state_dict(trained.bert.embeddings.state_dict())
    callback, _ = train(model, db_url, tmp_path / "partial", task="mlm", experiment="partial")
    found = links(db_url, callback.run_id)
    assert list(found) == [("initialized_from", base.run_id)]
    assert 0 < found[("initialized_from", base.run_id)]["fraction"] < 0.5


# -- wiring and failure -------------------------------------------------------------------------


def test_report_to_sqltrack_installs_the_callback(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify report_to="sqltrack" (after importing the module) tracks the run."""
    monkeypatch.setenv("SQLTRACK_URL", sqlite_url)
    monkeypatch.setenv("SQLTRACK_EXPERIMENT", "reported")
    trainer = Trainer(
        model=BertForMaskedLM(tiny_config()),
        args=training_args(tmp_path, report_to="sqltrack", run_name="named"),
        train_dataset=TokenData("mlm"),
    )
    trainer.train()
    assert query(
        sqlite_url,
        "SELECT r.name, e.name, r.status FROM runs r JOIN experiments e ON e.id = r.experiment_id",
    ) == [("named", "reported", "completed")]


def test_restoring_callback_states_is_harmless(db_url: str, tmp_path: Path) -> None:
    """Verify restore_callback_states_from_checkpoint=True resumes with the link."""
    torch.manual_seed(0)
    first, _ = train(
        BertForMaskedLM(tiny_config()), db_url, tmp_path, task="mlm", num_train_epochs=1
    )
    second, _ = train(
        BertForMaskedLM(tiny_config()),
        db_url,
        tmp_path,
        task="mlm",
        resume=str(tmp_path / "checkpoint-4"),
        restore_callback_states_from_checkpoint=True,
    )
    assert list(links(db_url, second.run_id)) == [("resumed_from", first.run_id)]


@pytest.mark.parametrize(
    ("mode", "returncode", "status"),
    [("caught", 0, "failed"), ("uncaught", 1, "failed"), ("ctrl-c", -signal.SIGINT, "cancelled")],
)
def test_a_train_that_raised_ends_failed_at_exit(
    db_url: str, tmp_path: Path, mode: str, returncode: int, status: str
) -> None:
    """Verify a train() that never reached its end is failed at exit (cancelled after Ctrl-C)."""
    done = run_python(str(TESTS / "_hf_script.py"), mode, db_url, str(tmp_path))
    assert done.returncode == returncode, done.stderr[-3000:]
    version = done.stdout.split("RUN ")[1].split()[0]
    rows = query(db_url, "SELECT id, uuid, status FROM runs")
    assert [(str(r[1]), r[2]) for r in rows] == [(version, status)]
    with sqltrack.connect(db_url) as tracker:
        assert tracker.metrics(rows[0][0])["loss"].notna().sum() == 2  # logged after steps 1, 2


def test_bad_arguments_are_refused_at_the_call_site() -> None:
    """Verify bad arguments fail in __init__ with an error naming the value."""
    with pytest.raises(ConfigurationError, match="resume='maybe' is not one of"):
        SQLTrackCallback("exp", "sqlite:///x.db", resume="maybe")
    with pytest.raises(ConfigurationError, match="experiment '' must be a non-empty str"):
        SQLTrackCallback("", "sqlite:///x.db")


def test_unreachable_database_warns_and_training_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Verify training completes with a warning when the database cannot be reached."""
    url = f"sqlite:///{tmp_path}/missing/dir/sqltrack.db"
    monkeypatch.setenv("SQLTRACK_FINISH_TIMEOUT", "1")  # then the run waits in the spool
    with pytest.warns(SQLTrackWarning, match="reach"):
        callback, trainer = train(BertForMaskedLM(tiny_config()), url, tmp_path, task="mlm")
    assert trainer.state.global_step == 8 and callback.run_id is None
    assert (tmp_path / "checkpoint-8" / SIDECAR).exists()
    assert "send it with: sqltrack sync" in caplog.text


def test_the_example_prints_a_lineage_of_three_runs(db_url: str, tmp_path: Path) -> None:
    """Verify examples/hf_pretrain_finetune.py links its three runs with the right kinds."""
    _, rows = run_example("hf_pretrain_finetune.py", db_url, tmp_path)
    assert rows == [
        ("classifier", "finetuned_from", "tiny-bert"),
        ("classifier (resumed)", "resumed_from", "classifier"),
    ]
