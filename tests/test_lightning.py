"""SQLTrackLogger and its callback, with real (tiny) Lightning Trainers on both backends."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import pickle
import shutil
import subprocess
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import torch
from _integration import TESTS, links, query, run_example, run_python
from _lightning_models import TinyModel, make_trainer, regression_data
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, RunStatus, offline
from sqltrack_core.errors import SQLTrackWarning, UnsupportedURLError
from sqltrack_integrations import lightning as sqltrack_lightning
from sqltrack_integrations.lightning import SQLTrackCallback, SQLTrackLogger

# Lightning's own advice (few workers, small logging interval, ...) is not under test.
pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def fit(
    tmp_path: Path,
    url: str,
    model: TinyModel,
    *,
    experiment: str = "exp",
    ckpt_path: str | None = None,
    logger_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> tuple[SQLTrackLogger, Trainer]:
    logger = SQLTrackLogger(experiment, url, **(logger_kwargs or {}))
    trainer = make_trainer(tmp_path, logger, **trainer_kwargs)
    trainer.fit(model, regression_data(), regression_data(seed=1), ckpt_path=ckpt_path)
    return logger, trainer


def best(trainer: Trainer) -> str:
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)
    return str(callback.best_model_path)


def pretrain(tmp_path: Path, url: str, seed: int = 0) -> tuple[SQLTrackLogger, str]:
    seed_everything(seed)
    logger, trainer = fit(tmp_path / "pre", url, TinyModel(), experiment="pretrain")
    return logger, best(trainer)


# -- the run, params and metrics ----------------------------------------------------------------


def test_fit_records_run_params_metrics_and_checkpoints(db_url: str, tmp_path: Path) -> None:
    """Verify one fit gives a completed run with hparams, typed metric columns and checkpoints."""
    seed_everything(0)
    logger, trainer = fit(
        tmp_path,
        db_url,
        TinyModel(hidden=12),
        logger_kwargs={"name": "base", "tags": ["lightning"], "comment": "tiny"},
        callbacks=[ModelCheckpoint(save_last=True)],
    )
    with sqltrack.connect(db_url) as tracker:
        info = tracker.run_info(logger.version)
        frame = tracker.metrics(info["id"])
    assert (info["status"], info["name"], info["tags"], info["comment"]) == (
        "completed",
        "base",
        ["lightning"],
        "tiny",
    )
    assert info["experiment"] == "exp" and info["uuid"] == logger.version
    assert (info["params.hidden"], info["params.lr"]) == (12, 0.05)
    # 4 batches x 2 epochs: train/loss at every optimizer step, val/loss at each epoch's end
    assert frame["train/loss"].notna().sum() == 8
    assert frame["val/loss"].notna().sum() == 2
    assert sorted(frame.loc[frame["val/loss"].notna(), "epoch"]) == [0, 1]
    assert frame["step"].max() == trainer.global_step - 1
    column_types = dict(query(db_url, "SELECT key, sql_type FROM metric_columns"))
    assert column_types["train/loss"] in ("REAL", "DOUBLE PRECISION")
    assert column_types["epoch"] == "BIGINT"
    # every file ModelCheckpoint wrote is registered, under a path that carries the run UUID
    paths = {
        Path(p).name
        for (p,) in query(
            db_url, f"SELECT path FROM checkpoints WHERE run_id = {info['id']} AND path IS NOT NULL"
        )
    }
    assert {"last.ckpt", Path(best(trainer)).name} <= paths
    assert logger.version in best(trainer)
    kinds = {
        k for (k,) in query(db_url, f"SELECT kind FROM checkpoints WHERE run_id = {info['id']}")
    }
    assert kinds == {"initial", "checkpoint", "final"}
    # the token inside the file loads with weights_only=True and names this run
    token = torch.load(best(trainer), weights_only=True)["sqltrack"]
    assert token["run_uuid"] == logger.version and isinstance(token["step"], int)


def test_log_hyperparams_takes_namespaces_dataclasses_and_anything(
    db_url: str, tmp_path: Path
) -> None:
    """Verify hyperparameters of every common shape are stored JSON-safely and merged."""

    @dataclasses.dataclass
    class Optim:
        name: str = "adam"
        betas: tuple[float, float] = (0.9, 0.99)

    logger = SQLTrackLogger("exp", db_url)
    logger.log_hyperparams(argparse.Namespace(lr=0.1, layers=[1, 2], path=tmp_path))
    logger.log_hyperparams({"optim": Optim(), "nested": {"a": {"b": 1}}, "obj": object()})
    logger.log_hyperparams({"nested": {"a": {"c": math.nan}}})
    logger.finalize("success")
    with sqltrack.connect(db_url) as tracker:
        params = tracker.runs().iloc[0]
    assert params["params.lr"] == 0.1 and params["params.path"] == str(tmp_path)
    assert params["params.optim.betas"] == [0.9, 0.99]
    assert params["params.nested.a.b"] == 1 and math.isnan(params["params.nested.a.c"])
    assert params["params.obj"].startswith("<object object")
    with pytest.raises(ConfigurationError, match=r"hyperparameters \[1, 2\] are a list"):
        logger.log_hyperparams([1, 2])


def test_fit_then_test_continue_one_run(db_url: str, tmp_path: Path) -> None:
    """Verify fit then test on one Trainer log into one run, completed after each stage."""
    seed_everything(0)
    model = TinyModel()
    logger, trainer = fit(tmp_path, db_url, model)
    with sqltrack.connect(db_url) as tracker:
        assert tracker.run_info(logger.version)["status"] == "completed"
    trainer.test(model, regression_data(seed=2))
    with sqltrack.connect(db_url) as tracker:
        runs = tracker.runs()
        frame = tracker.metrics(int(runs["id"].iloc[0]))
    assert len(runs) == 1 and runs["status"].iloc[0] == "completed"
    assert frame["test/loss"].notna().sum() == 1 and frame["train/loss"].notna().sum() == 8


class Boom(Callback):
    """Raise `exception` once the Trainer has made `after` optimizer steps."""

    def __init__(self, exception: BaseException, after: int = 3) -> None:
        self.exception = exception
        self.after = after

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step >= self.after:
            raise self.exception


def test_a_failing_fit_ends_the_run_failed(db_url: str, tmp_path: Path) -> None:
    """Verify an exception in training ends the run failed, with what it logged kept."""
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, db_url, TinyModel(), callbacks=[Boom(RuntimeError("boom"))])
    assert query(db_url, "SELECT status FROM runs") == [("failed",)]
    assert query(db_url, "SELECT count(*) FROM metrics") == [(3,)]


def test_ctrl_c_ends_the_run_cancelled(db_url: str, tmp_path: Path) -> None:
    """Verify a KeyboardInterrupt (Lightning exits with status 1) ends the run cancelled."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            fit(tmp_path, db_url, TinyModel(), callbacks=[Boom(KeyboardInterrupt())])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning leaves SIGINT ignored
    assert query(db_url, "SELECT status FROM runs") == [("cancelled",)]


# -- provenance links -----------------------------------------------------------------------------


def test_load_from_checkpoint_with_a_new_head_links_finetuned_from(
    db_url: str, tmp_path: Path
) -> None:
    """Verify Model.load_from_checkpoint plus a new head links finetuned_from by the token the
    checkpoint carries, with the fingerprints' fraction."""
    base, path = pretrain(tmp_path, db_url)
    model = TinyModel.load_from_checkpoint(path)
    model.head = torch.nn.Linear(16, 3)  # a new task
    logger, _ = fit(tmp_path / "ft", db_url, model, experiment="finetune")
    found = links(db_url, logger.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    token = torch.load(path, weights_only=True)["sqltrack"]
    assert evidence["method"] == "token" and 0.5 <= evidence["fraction"] < 1.0
    assert (evidence["checkpoint_uuid"], evidence["step"]) == (
        token["checkpoint_uuid"],
        token["step"],
    )


def test_resume_from_ckpt_path_makes_a_new_run_linked_resumed_from(
    db_url: str, tmp_path: Path
) -> None:
    """Verify fit(ckpt_path=...) of a copied, renamed checkpoint links resumed_from by token."""
    base, path = pretrain(tmp_path, db_url)
    copied = tmp_path / "elsewhere" / "renamed.ckpt"
    copied.parent.mkdir()
    shutil.copy(path, copied)
    Path(path).unlink()
    logger, trainer = fit(
        tmp_path / "resume", db_url, TinyModel(), ckpt_path=str(copied), max_epochs=3
    )
    token = torch.load(copied, weights_only=True)["sqltrack"]
    assert links(db_url, logger.run_id) == {
        ("resumed_from", base.run_id): {
            "method": "token",
            "checkpoint_uuid": token["checkpoint_uuid"],
            "step": token["step"],
            "path": str(copied),
        }
    }
    assert logger.run_id != base.run_id and trainer.global_step == 12


def test_resume_continue_goes_on_in_the_checkpoints_run(db_url: str, tmp_path: Path) -> None:
    """Verify resume="continue" logs the resumed epochs into the original run, and nothing else."""
    base, path = pretrain(tmp_path, db_url)
    logger, _ = fit(
        tmp_path / "again",
        db_url,
        TinyModel(),
        ckpt_path=path,
        max_epochs=4,
        logger_kwargs={"resume": "continue"},
    )
    assert logger.run_id == base.run_id and logger.version == base.version
    assert query(db_url, "SELECT id, status FROM runs") == [(base.run_id, "completed")]
    assert query(db_url, "SELECT count(*) FROM run_links") == [(0,)]
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(base.run_id)
    assert frame["train/loss"].notna().sum() == 16
    assert sorted(frame.loc[frame["val/loss"].notna(), "epoch"]) == [0, 1, 2, 3]


def test_run_argument_continues_that_run_in_its_folder(db_url: str, tmp_path: Path) -> None:
    """Verify run=<uuid> continues that run, and its checkpoints go to the same folder."""
    base, path = pretrain(tmp_path, db_url)
    logger = SQLTrackLogger("pretrain", db_url, run=base.version, save_dir=tmp_path / "pre")
    assert logger.version == base.version
    trainer = make_trainer(tmp_path / "pre", logger, max_epochs=3)
    trainer.fit(TinyModel(), regression_data(), ckpt_path=path)
    assert logger.run_id == base.run_id
    assert Path(best(trainer)).parent == Path(path).parent
    assert query(db_url, "SELECT count(*) FROM runs") == [(1,)]


def test_fresh_and_same_seed_models_link_nothing(db_url: str, tmp_path: Path) -> None:
    """Verify a fresh model, and a second run from the same seed, get no links."""
    first, _ = pretrain(tmp_path / "a", db_url, seed=7)
    second, _ = pretrain(tmp_path / "b", db_url, seed=7)
    assert links(db_url, first.run_id) == {} and links(db_url, second.run_id) == {}


def test_frozen_backbone_shared_by_two_finetunes_credits_pretraining(
    db_url: str, tmp_path: Path
) -> None:
    """Verify two fine-tunes that freeze the same backbone link to pre-training, not each other."""
    base, path = pretrain(tmp_path, db_url)
    ids = []
    for name in ("ft1", "ft2"):
        model = TinyModel.load_from_checkpoint(path, freeze_backbone=True)
        logger, _ = fit(tmp_path / name, db_url, model, experiment=name)
        ids.append(logger.run_id)
        assert list(links(db_url, logger.run_id)) == [("finetuned_from", base.run_id)]
    assert ids[0] != ids[1]


def test_weights_only_checkpoints_link_by_fingerprint(db_url: str, tmp_path: Path) -> None:
    """Verify save_weights_only files are registered and tokened, and link by fingerprint."""
    seed_everything(0)
    base, trainer = fit(
        tmp_path,
        db_url,
        TinyModel(),
        experiment="pretrain",
        callbacks=[ModelCheckpoint(save_weights_only=True)],
    )
    checkpoint = torch.load(best(trainer), weights_only=True)
    assert "optimizer_states" not in checkpoint
    assert checkpoint["sqltrack"]["run_uuid"] == base.version
    model = TinyModel()
    model.load_state_dict(checkpoint["state_dict"])
    logger, _ = fit(tmp_path / "ft", db_url, model, experiment="finetune")
    assert list(links(db_url, logger.run_id)) == [("finetuned_from", base.run_id)]


def test_weights_saved_by_hand_after_fit_link_by_final_fingerprints(
    db_url: str, tmp_path: Path
) -> None:
    """Verify weights saved with torch.save after training link to their run (kind 'final')."""
    seed_everything(0)
    model = TinyModel()
    base, _ = fit(tmp_path, db_url, model, experiment="pretrain", enable_checkpointing=False)
    torch.save(model.state_dict(), tmp_path / "by-hand.pt")
    fresh = TinyModel()
    fresh.load_state_dict(torch.load(tmp_path / "by-hand.pt", weights_only=True))
    logger, _ = fit(tmp_path / "ft", db_url, fresh, experiment="finetune")
    assert list(links(db_url, logger.run_id)) == [("finetuned_from", base.run_id)]


def test_three_generations_link_each_to_its_parent(db_url: str, tmp_path: Path) -> None:
    """Verify pretrain -> finetune -> finetune links each run to its direct parent only."""
    base, path = pretrain(tmp_path, db_url)
    child, trainer = fit(
        tmp_path / "c", db_url, TinyModel.load_from_checkpoint(path), experiment="child"
    )
    grandchild, _ = fit(
        tmp_path / "g", db_url, TinyModel.load_from_checkpoint(best(trainer)), experiment="gc"
    )
    assert list(links(db_url, child.run_id)) == [("finetuned_from", base.run_id)]
    assert list(links(db_url, grandchild.run_id)) == [("finetuned_from", child.run_id)]


def test_partial_load_links_initialized_from_with_the_fraction(db_url: str, tmp_path: Path) -> None:
    """Verify loading only the first layer of a checkpoint links initialized_from, with its share."""
    base, path = pretrain(tmp_path, db_url)
    state = torch.load(path, weights_only=True)["state_dict"]
    model = TinyModel()
    model.backbone[0].load_state_dict(
        {"weight": state["backbone.0.weight"], "bias": state["backbone.0.bias"]}
    )
    logger, _ = fit(tmp_path / "partial", db_url, model, experiment="partial")
    found = links(db_url, logger.run_id)
    assert list(found) == [("initialized_from", base.run_id)]
    # backbone.0 (8x16 + 16) of backbone.0, backbone.2 (16x16 + 16) and the head's 16 weights
    # (its 1-element bias is too small to fingerprint)
    assert found[("initialized_from", base.run_id)]["fraction"] == pytest.approx(
        144 / 432, abs=1e-6
    )


def test_resume_without_a_token_links_resumed_from_by_fingerprint(
    db_url: str, tmp_path: Path
) -> None:
    """Verify a checkpoint whose token was stripped still resumes linked, by its weights."""
    base, path = pretrain(tmp_path, db_url)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["sqltrack"]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(checkpoint, stripped)
    logger, _ = fit(tmp_path / "resume", db_url, TinyModel(), ckpt_path=str(stripped), max_epochs=3)
    found = links(db_url, logger.run_id)
    assert list(found) == [("resumed_from", base.run_id)]
    assert found[("resumed_from", base.run_id)]["method"] == "fingerprint"


def test_trainer_save_checkpoint_by_hand_is_registered_with_a_token(
    db_url: str, tmp_path: Path
) -> None:
    """Verify trainer.save_checkpoint(path) registers the file and embeds the token."""
    logger, trainer = fit(tmp_path, db_url, TinyModel(), enable_checkpointing=False)
    target = tmp_path / "by-hand.ckpt"
    trainer.save_checkpoint(target)
    assert torch.load(target, weights_only=True)["sqltrack"]["run_uuid"] == logger.version
    paths = query(db_url, "SELECT path, step FROM checkpoints WHERE path IS NOT NULL")
    assert paths == [(str(target), 8)]
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]  # not reopened


def test_callback_comes_from_the_entry_point_or_from_log_graph(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Verify the entry point installs the callback once, and log_graph installs it otherwise."""
    trainer = make_trainer(tmp_path, SQLTrackLogger("exp", sqlite_url))
    assert sum(isinstance(cb, SQLTrackCallback) for cb in trainer.callbacks) == 1  # type: ignore[attr-defined]
    base, path = pretrain(tmp_path, sqlite_url)
    logger = SQLTrackLogger("finetune", sqlite_url)
    trainer = make_trainer(tmp_path / "ft", logger)
    trainer.callbacks = [  # type: ignore[attr-defined]
        cb
        for cb in trainer.callbacks
        if not isinstance(cb, SQLTrackCallback)  # type: ignore[attr-defined]
    ]
    trainer.fit(TinyModel.load_from_checkpoint(path), regression_data())
    assert sum(isinstance(cb, SQLTrackCallback) for cb in trainer.callbacks) == 1  # type: ignore[attr-defined]
    assert list(links(sqlite_url, logger.run_id)) == [("finetuned_from", base.run_id)]
    assert logger.version in best(trainer)


# -- no trace of sqltrack in a Trainer without SQLTrackLogger (issue 13) -------------------------


@pytest.fixture
def lightning_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG, with its handler on Lightning's loggers too: they do not propagate when
    the root logger had no handler as Lightning was imported."""
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("lightning.fabric", "lightning.pytorch")]
    for logger in loggers:
        caplog.set_level(logging.DEBUG, logger=logger.name)
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def no_logger_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from a process with no SQLTrackLogger alive: earlier tests' loggers may be (a
    LightningCLI's stays reachable after its test), and the fresh-process test checks the
    real thing."""
    monkeypatch.setattr(sqltrack_lightning, "_LOGGERS", weakref.WeakSet())


def sqltrack_callbacks(trainer: Trainer) -> list[Callback]:
    return [cb for cb in trainer.callbacks if isinstance(cb, SQLTrackCallback)]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("no_logger_alive")
@pytest.mark.parametrize("logger", ["none", "csv"])
def test_a_trainer_without_our_logger_prints_and_logs_nothing_of_sqltrack(
    logger: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lightning_records: pytest.LogCaptureFixture,
) -> None:
    """Verify a Trainer made while no SQLTrackLogger exists gets no callback from the entry point
    and neither prints nor logs anything about sqltrack, through a whole fit."""
    trainer = make_trainer(
        tmp_path,
        False if logger == "none" else CSVLogger(tmp_path),
        callbacks=[ModelCheckpoint(save_last=True)],
    )
    assert sqltrack_callbacks(trainer) == []
    trainer.fit(TinyModel(), regression_data())
    assert "sqltrack" not in torch.load(best(trainer), weights_only=True)
    captured = capsys.readouterr()
    messages = [record.getMessage() for record in lightning_records.records]
    assert any("max_epochs=2" in message for message in messages)  # Lightning's records are seen
    text = "\n".join([captured.out, captured.err, *messages]).replace(str(tmp_path), "<tmp>")
    assert "sqltrack" not in text.lower()


def test_a_trainer_with_our_logger_gets_the_callback_before_setup(
    sqlite_url: str, tmp_path: Path, lightning_records: pytest.LogCaptureFixture
) -> None:
    """Verify the entry point still adds the callback to a Trainer given SQLTrackLogger, in
    Trainer.__init__, so the checkpoints of its fit carry tokens."""
    logger = SQLTrackLogger("exp", sqlite_url)
    trainer = make_trainer(tmp_path, logger, callbacks=[ModelCheckpoint(save_last=True)])
    assert len(sqltrack_callbacks(trainer)) == 1
    messages = [record.getMessage() for record in lightning_records.records]
    assert any("entry point 'sqltrack'" in message for message in messages)
    trainer.fit(TinyModel(), regression_data())
    last = Path(logger.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["sqltrack"]["run_uuid"] == logger.version


def test_a_trainer_made_while_our_logger_exists_elsewhere_is_left_alone(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Verify the callback a Trainer without SQLTrackLogger gets while one exists elsewhere in the
    process does nothing: no token in its checkpoints, no run."""
    other = SQLTrackLogger("exp", sqlite_url)  # made for another Trainer
    trainer = make_trainer(
        tmp_path, CSVLogger(tmp_path), callbacks=[ModelCheckpoint(save_last=True)]
    )
    assert len(sqltrack_callbacks(trainer)) == 1
    trainer.fit(TinyModel(), regression_data())
    assert "sqltrack" not in torch.load(best(trainer), weights_only=True)
    assert other.run_id is None
    assert query(sqlite_url, "SELECT count(*) FROM runs") == [(0,)]


@pytest.mark.usefixtures("no_logger_alive")
def test_lightning_cli_makes_our_logger_first_so_its_trainer_gets_the_callback(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify LightningCLI instantiates --trainer.logger before the Trainer, so the entry point
    sees a SQLTrackLogger and adds the callback."""
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQLTRACK_URL", sqlite_url)
    assert sqltrack_callbacks(make_trainer(tmp_path, False)) == []
    cli = LightningCLI(
        TinyModel,
        run=False,
        args=[
            "--trainer.logger=sqltrack_integrations.lightning.SQLTrackLogger",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ],
    )
    assert isinstance(cli.trainer.logger, SQLTrackLogger)
    assert len(sqltrack_callbacks(cli.trainer)) == 1


_FRESH_PROCESS = """
import sys
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

root, url = sys.argv[1:]
options = {"enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": root}
Trainer(logger=False, **options)
Trainer(logger=CSVLogger(root), **options)
print("--- now with SQLTrackLogger ---", file=sys.stderr, flush=True)
from sqltrack_integrations.lightning import SQLTrackLogger

Trainer(logger=SQLTrackLogger("exp", url), **options)
"""


def test_a_fresh_process_shows_sqltrack_only_with_our_logger(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Verify, as a user's terminal shows it (Lightning's own logging set-up, the installed entry
    point), that Trainers without SQLTrackLogger print nothing about sqltrack, and one with it
    reports the callback the entry point adds."""
    done = run_python("-c", _FRESH_PROCESS, str(tmp_path), sqlite_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    before, marker, after = done.stderr.replace(str(tmp_path), "<tmp>").partition(
        "--- now with SQLTrackLogger ---"
    )
    assert marker and "GPU available" in before  # Lightning did print, to stderr
    assert "sqltrack" not in (before + done.stdout.replace(str(tmp_path), "<tmp>")).lower()
    assert "Adding 1 callbacks from entry point 'sqltrack': SQLTrackCallback" in after


# -- arguments, ranks, pickling -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"experiment": ""}, ConfigurationError, "experiment '' must be a non-empty str"),
        (
            {"resume": "always"},
            ConfigurationError,
            "resume='always' is not one of 'new', 'continue'",
        ),
        (
            {"run": "not-a-uuid"},
            ConfigurationError,
            "run 'not-a-uuid' is neither a run id nor a UUID",
        ),
        ({"url": "mysql://x/y"}, UnsupportedURLError, "unsupported scheme 'mysql'"),
        ({"tags": ["ok", 3]}, ConfigurationError, "3"),
        ({"sample_above": 0}, ConfigurationError, "sample_above=0 must be a positive int"),
        ({"name": 5}, ConfigurationError, "run name 5 is a int"),
    ],
)
def test_bad_arguments_are_refused_at_the_call_site(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Verify each bad argument fails in __init__ with an error naming the value."""
    arguments: dict[str, Any] = {"experiment": "exp", "url": "sqlite:///x.db", **kwargs}
    with pytest.raises(error, match=match):
        SQLTrackLogger(**arguments)


def test_finalize_refuses_an_unknown_status(sqlite_url: str) -> None:
    """Verify finalize() names a status it does not know."""
    with pytest.raises(ConfigurationError, match="finalize status 'done' is not one of"):
        SQLTrackLogger("exp", sqlite_url).finalize("done")


def test_other_ranks_create_nothing(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that on a rank other than 0 the logger neither connects nor writes."""
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = SQLTrackLogger("exp", sqlite_url)
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.experiment.log({"x": 1})  # the no-op stand-in
    logger.finalize("success")
    assert logger.run_id is None and not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_pickled_logger_continues_the_same_run(db_url: str) -> None:
    """Verify a pickled copy (as ddp_spawn makes) drops connections and logs into the same run."""
    logger = SQLTrackLogger("exp", db_url)
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.run_id == logger.run_id is not None and copy.version == logger.version
    copy.log_metrics({"loss": 0.5}, step=1)
    copy.finalize("success")
    logger.finalize("success")
    assert copy.run_id == logger.run_id
    assert query(db_url, "SELECT count(*) FROM metrics") == [(2,)]


def test_ddp_spawn_makes_one_run(sqlite_url: str, tmp_path: Path) -> None:
    """Verify ddp_spawn with two CPU processes records one run with every metric."""
    logger = SQLTrackLogger("exp", sqlite_url)
    trainer = make_trainer(tmp_path, logger, strategy="ddp_spawn", devices=2)
    trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
    rows = query(sqlite_url, "SELECT id, uuid, status FROM runs")
    assert [(r[1], r[2]) for r in rows] == [(logger.version, "completed")]
    assert logger.run_id == rows[0][0]  # the children made it; the parent finds it by UUID
    with sqltrack.connect(sqlite_url) as tracker:
        frame = tracker.metrics(rows[0][0])
    # 64 samples over 2 ranks, batches of 16: 2 steps per epoch
    assert frame["train/loss"].notna().sum() == 4 and frame["val/loss"].notna().sum() == 2


def run_script(mode: str, url: str, root: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run tests/_lightning_script.py MODE in a subprocess; return it and the run's UUID."""
    done = run_python(str(TESTS / "_lightning_script.py"), mode, url, str(root))
    return done, done.stdout.split("RUN ")[1].split()[0]


def test_ddp_with_two_processes_makes_one_run_with_every_metric(
    db_url: str, tmp_path: Path
) -> None:
    """Verify strategy="ddp" on 2 CPU processes records one run, written by rank 0 only."""
    done, version = run_script("ddp", db_url, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = query(db_url, "SELECT id, uuid, status FROM runs")
    assert [(str(r[1]), r[2]) for r in rows] == [(version, "completed")]
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(rows[0][0])
    # 64 samples over 2 ranks, batches of 16: 2 steps per epoch, 2 epochs
    assert frame["train/loss"].notna().sum() == 4 and frame["val/loss"].notna().sum() == 2
    paths = query(db_url, "SELECT path FROM checkpoints WHERE path IS NOT NULL")
    assert paths and all(version in p for (p,) in paths)


def test_the_example_prints_a_lineage_of_three_runs(db_url: str, tmp_path: Path) -> None:
    """Verify examples/lightning_pretrain_finetune.py links its three runs with the right kinds."""
    _, rows = run_example("lightning_pretrain_finetune.py", db_url, tmp_path)
    assert rows == [
        ("new-head", "finetuned_from", "backbone"),
        ("new-head (resumed)", "resumed_from", "new-head"),
    ]
    assert query(db_url, "SELECT name, status FROM runs WHERE name = 'new-head'") == [
        ("new-head", "cancelled")
    ]


def test_a_real_sigterm_stops_training_gracefully_and_cancels_the_run(
    db_url: str, tmp_path: Path
) -> None:
    """Verify SIGTERM mid-fit lets Lightning stop gracefully, and the run ends cancelled."""
    done, version = run_script("sigterm", db_url, tmp_path)
    # Lightning finishes the epoch, then exits with SIGTERMException (a SystemExit, status 0),
    # where a kill by the signal would give -15 and lose the epoch's end
    assert done.returncode == 0 and "Received SIGTERM" in done.stderr, done.stderr[-3000:]
    rows = query(db_url, "SELECT id, uuid, status FROM runs")
    assert [(str(r[1]), r[2]) for r in rows] == [(version, "cancelled")]
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(rows[0][0])
    assert frame["train/loss"].notna().sum() == 4  # the whole first epoch


# -- a database that is not there -----------------------------------------------------------------


def _missing_database(dialect: str, tmp_path: Path, pg_url: str | None) -> tuple[str, Any]:
    """A URL that cannot be reached now, and a function that makes it reachable."""
    if dialect == "sqlite":
        folder = tmp_path / "not-yet"
        return f"sqlite:///{folder}/sqltrack.db", lambda: folder.mkdir()
    import psycopg

    assert pg_url is not None
    name = f"later_{uuid.uuid4().hex[:10]}"
    base = pg_url.split("?")[0]
    admin = base

    def create() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    return base.rsplit("/", 1)[0] + "/" + name, create


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_unreachable_database_at_start_warns_and_training_completes(
    dialect: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Verify training completes with a warning when the database never answers, leaves the
    run in the spool with one line saying so, and `sync_spools` sends it once it answers."""
    pg = request.getfixturevalue("pg_url") if dialect == "postgresql" else None
    url, make_reachable = _missing_database(dialect, tmp_path, pg)
    monkeypatch.setenv("SQLTRACK_FINISH_TIMEOUT", "1")
    try:
        with pytest.warns(SQLTrackWarning) as caught:  # cannot reach it; no provenance
            logger, trainer = fit(tmp_path, url, TinyModel())
        assert any("cannot reach" in str(w.message) for w in caught)
        assert trainer.global_step == 8 and logger.run_id is None
        assert "send it with: sqltrack sync" in caplog.text
        make_reachable()
        sent = offline.sync_spools()
        assert [entry.removed for entry in sent] == [True]
        with sqltrack.connect(url) as tracker:
            info = tracker.run_info(logger.run_uuid)
            frame = tracker.metrics(info["id"])
        assert info["status"] == "completed" and frame["train/loss"].notna().sum() == 8
    finally:
        _drop_database(dialect, url, pg)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_database_that_comes_back_gets_everything(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Verify a database that answers only during training receives every row and link."""
    pg = request.getfixturevalue("pg_url") if dialect == "postgresql" else None
    url, make_reachable = _missing_database(dialect, tmp_path, pg)

    class Restore(Callback):
        def on_train_epoch_end(self, trainer: Trainer, *args: Any) -> None:
            if trainer.current_epoch == 0:
                make_reachable()

    try:
        with pytest.warns(SQLTrackWarning) as caught:  # cannot reach it, then it is back
            logger, _ = fit(tmp_path, url, TinyModel(), callbacks=[Restore()])
        assert any("cannot reach" in str(w.message) for w in caught)
        assert logger.run_id is not None
        with sqltrack.connect(url) as tracker:
            info = tracker.run_info(logger.run_id)
            frame = tracker.metrics(logger.run_id)
            checkpoints = tracker.query("SELECT kind FROM checkpoints")
        assert info["status"] == "completed" and info["params.lr"] == 0.05
        assert frame["train/loss"].notna().sum() == 8
        assert set(checkpoints["kind"]) == {"initial", "checkpoint", "final"}
    finally:
        _drop_database(dialect, url, pg)


def _drop_database(dialect: str, url: str, pg_url: str | None) -> None:
    if dialect == "postgresql":
        import psycopg

        sqltrack_db = url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:  # type: ignore[union-attr]
            conn.execute(f'DROP DATABASE IF EXISTS "{sqltrack_db}" WITH (FORCE)')


def test_status_mapping_covers_lightnings_statuses(sqlite_url: str) -> None:
    """Verify 'finished' (the SLURM requeue) reads as cancelled, and a later stage reopens."""
    logger = SQLTrackLogger("exp", sqlite_url)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("finished")
    assert query(sqlite_url, "SELECT status FROM runs") == [("cancelled",)]
    logger.log_metrics({"loss": 0.5}, step=1)
    assert query(sqlite_url, "SELECT status FROM runs") == [("running",)]
    logger.finalize("success")
    assert logger.experiment.status is RunStatus.COMPLETED
