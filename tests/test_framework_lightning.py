"""SQLTrackLogger held to what Lightning's own tests and tools expect of every logger.

Modelled on what Lightning checks (``tests_pytorch/loggers/test_all.py``: fit, validate and
test steps, pickling a Trainer, leftover threads; LightningCLI's ``SaveConfigCallback``;
profilers writing into ``Trainer.log_dir``), with our own code; and for each run the database
is compared, value by value, with what Lightning's own `CSVLogger` wrote beside it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("lightning")

from _integration import query
from _lightning_models import RegressionData, TinyModel, regression_data
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler

import sqltrack_core as sqltrack
from sqltrack_core.runs import active_runs
from sqltrack_integrations.lightning import SQLTrackLogger

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

QUIET: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
}


def sqltrack_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sqltrack") and t.is_alive()}


def wait_for_no_threads(
    before: set[threading.Thread], seconds: float = 5.0
) -> set[threading.Thread]:
    """Our threads started since `before` that are still alive after at most `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := sqltrack_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture
def finish_open_runs() -> Iterator[None]:
    """End the runs a test leaves open on purpose (a dropped, unfinalized logger)."""
    yield
    for run in active_runs():
        run.finish()
        run.tracker.close()


def stored(url: str, run_uuid: str) -> dict[int, dict[str, Any]]:
    """step -> {key: value} of the run, from the database (missing values left out)."""
    with sqltrack.connect(url) as tracker:
        frame = tracker.metrics(tracker.run_info(run_uuid)["id"])
    keys = [c for c in frame.columns if c not in ("run_id", "step", "logged_at")]
    return {
        int(row["step"]): {k: row[k] for k in keys if not _missing(row[k])}
        for _, row in frame.iterrows()
    }


def _missing(value: Any) -> bool:
    """NULL as the readers give it: None, NaN or NaT."""
    return value is None or bool(pd.isna(value))


# -- LightningCLI, profilers, Trainer.log_dir ---------------------------------------------------


def cli_args(*extra: str) -> list[str]:
    return [
        "fit",
        "--trainer.logger=sqltrack_integrations.lightning.SQLTrackLogger",
        "--trainer.logger.init_args.experiment=cli",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.profiler=SimpleProfiler",
        "--trainer.profiler.filename=perf",
        *extra,
    ]


def test_lightning_cli_runs_twice_in_one_folder(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify LightningCLI with our logger runs twice in one folder, each run with its own
    Trainer.log_dir holding its config.yaml, profiler report and checkpoints."""
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQLTRACK_URL", db_url)
    log_dirs = []
    for hidden in (8, 12):
        cli = LightningCLI(TinyModel, RegressionData, args=cli_args(f"--model.hidden={hidden}"))
        logger = cli.trainer.logger
        assert isinstance(logger, SQLTrackLogger)
        log_dir = cli.trainer.log_dir
        assert log_dir == logger.log_dir == str(tmp_path / "cli" / logger.version)
        assert (Path(log_dir) / "config.yaml").is_file()
        assert "SQLTrackLogger" in (Path(log_dir) / "config.yaml").read_text()
        assert (Path(log_dir) / "fit-perf.txt").is_file()
        assert list((Path(log_dir) / "checkpoints").glob("*.ckpt"))
        log_dirs.append(log_dir)
    assert log_dirs[0] != log_dirs[1]
    rows = query(db_url, "SELECT uuid, status FROM runs ORDER BY id")
    assert [(str(u), s) for u, s in rows] == [(Path(d).name, "completed") for d in log_dirs]
    with sqltrack.connect(db_url) as tracker:
        hidden = [tracker.run_info(Path(d).name)["params.hidden"] for d in log_dirs]
    assert hidden == [8, 12]


def test_log_dir_defaults_to_the_trainers_root_and_save_dir_wins(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Verify log_dir is save_dir/experiment/UUID, save_dir defaulting to default_root_dir,
    and that checkpoints land in log_dir/checkpoints either way."""
    for save_dir, root in ((None, tmp_path / "root"), (tmp_path / "mine", tmp_path / "mine")):
        logger = SQLTrackLogger("exp", sqlite_url, save_dir=save_dir)
        trainer = Trainer(logger=logger, max_epochs=1, default_root_dir=tmp_path / "root", **QUIET)
        trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
        expected = root / "exp" / logger.version
        assert trainer.log_dir == logger.log_dir == str(expected)
        checkpoint = trainer.checkpoint_callback
        assert isinstance(checkpoint, ModelCheckpoint)
        assert Path(checkpoint.best_model_path).parent == expected / "checkpoints"


@pytest.mark.parametrize("save_dir", ["given", "default"])
def test_a_profiler_report_and_checkpoints_share_the_run_folder(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save_dir: str
) -> None:
    """Verify a profiler, which asks for Trainer.log_dir before the logger meets its Trainer,
    writes into the run's folder beside its checkpoints: with save_dir given (and another
    default_root_dir), and with neither given."""
    monkeypatch.chdir(tmp_path)
    given = save_dir == "given"
    logger = SQLTrackLogger("exp", sqlite_url, save_dir=tmp_path / "runs" if given else None)
    trainer = Trainer(
        logger=logger,
        max_epochs=1,
        default_root_dir=tmp_path / "elsewhere" if given else tmp_path,
        profiler=SimpleProfiler(filename="perf"),
        **QUIET,
    )
    trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
    folder = Path(logger.log_dir)
    assert trainer.log_dir == str(folder) and (folder / "fit-perf.txt").is_file()
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
    assert Path(checkpoint.best_model_path).parent == folder / "checkpoints"


# -- what Lightning logged, value by value ------------------------------------------------------


def csv_values(logger: CSVLogger) -> list[tuple[int, str, float]]:
    """(step, key, value) of every cell CSVLogger wrote, in order."""
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as file:
        return [
            (int(row["step"]), key, float(value))
            for row in csv.DictReader(file)
            for key, value in row.items()
            if key != "step" and value != ""
        ]


def test_fit_validate_and_test_match_csv_logger(db_url: str, tmp_path: Path) -> None:
    """Verify every value Lightning handed CSVLogger in fit, validate and test is in the
    database, at its step, exactly."""
    seed_everything(0)
    ours = SQLTrackLogger("exp", db_url)
    theirs = CSVLogger(tmp_path / "csv")
    trainer = Trainer(logger=[ours, theirs], max_epochs=2, default_root_dir=tmp_path, **QUIET)
    model = TinyModel()
    trainer.fit(model, regression_data(), regression_data(seed=1))
    trainer.validate(model, regression_data(seed=1))
    trainer.test(model, regression_data(seed=2))
    expected = csv_values(theirs)
    assert {key for _, key, _ in expected} == {"train/loss", "val/loss", "test/loss", "epoch"}
    database = stored(db_url, ours.version)
    for step, key, value in expected:
        assert database[step][key] == value, (step, key)
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]


# -- pickling and threads -----------------------------------------------------------------------


def test_pickled_trainer_logs_into_one_run_and_its_threads_stop(db_url: str) -> None:
    """Verify a pickled Trainer's logger logs into the same run, and that the threads it
    leaves are daemons whose stop() ends them (Lightning's test suite stops leftover threads
    that way and fails a test on any other)."""
    before = sqltrack_threads()
    logger = SQLTrackLogger("exp", db_url)
    trainer = Trainer(logger=logger, max_epochs=1, **QUIET)
    copy = pickle.loads(pickle.dumps(trainer))
    copy.logger.log_metrics({"acc": 1.0}, step=0)
    assert copy.logger.version == logger.version
    left = sqltrack_threads() - before
    assert left and all(thread.daemon for thread in left)
    for thread in left:
        thread.stop()  # type: ignore[attr-defined]
        assert not thread.is_alive()
    assert stored(db_url, logger.version) == {0: {"acc": 1.0}}
    assert logger.run_id == copy.logger.run_id is not None
    copy.logger.finalize("success")
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]


def test_a_finalized_logger_leaves_no_thread(db_url: str, tmp_path: Path) -> None:
    """Verify fit() ends the writer thread and the connection watchdog with the run."""
    before = sqltrack_threads()
    logger = SQLTrackLogger("exp", db_url)
    Trainer(logger=logger, max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(
        TinyModel(), regression_data(), regression_data(seed=1)
    )
    assert not wait_for_no_threads(before)


@pytest.mark.usefixtures("finish_open_runs")
def test_a_dropped_unfinalized_logger_takes_its_thread_along(db_url: str) -> None:
    """Verify a logger dropped without finalize() ends its writer thread, having written what
    it logged; the run stays open (the core ends it at exit)."""
    before = sqltrack_threads()
    logger = SQLTrackLogger("exp", db_url)
    logger.log_metrics({"loss": 0.5}, step=3)
    version = logger.version
    assert sqltrack_threads() - before
    del logger
    gc.collect()
    assert not wait_for_no_threads(before)
    assert stored(db_url, version) == {3: {"loss": 0.5}}
    assert query(db_url, "SELECT status FROM runs") == [("running",)]


# -- hyperparameters and checkpoints ------------------------------------------------------------


def stored_params(url: str) -> dict[str, Any]:
    ((params,),) = query(url, "SELECT params FROM runs")
    loaded: dict[str, Any] = json.loads(params) if isinstance(params, str) else params
    return loaded


def test_hyperparameters_keep_their_structure(db_url: str) -> None:
    """Verify omegaconf, argparse, jsonargparse, dataclass, attrs and pydantic hyperparameters
    are stored as the nested objects and lists they hold, never as their repr."""
    import attrs
    import jsonargparse
    import pydantic
    from omegaconf import OmegaConf

    @dataclasses.dataclass
    class Data:
        sizes: tuple[int, ...] = (8, 16)

    @attrs.define
    class Model:
        depth: int = 2
        widths: list[int] = attrs.Factory(lambda: [4, 8])

    class Optim(pydantic.BaseModel):
        lr: float = 0.1
        betas: tuple[float, float] = (0.9, 0.99)

    logger = SQLTrackLogger("exp", db_url)
    config = OmegaConf.create(
        {"lrs": [0.1, 0.01], "sched": {"warmup": 10, "total": "${.warmup}"}, "must": "???"}
    )
    logger.log_hyperparams(config)
    logger.log_hyperparams({"only_list": OmegaConf.create([1, [2, 3]])})
    logger.log_hyperparams(argparse.Namespace(cli=argparse.Namespace(seed=3)))
    logger.log_hyperparams(jsonargparse.Namespace(trainer=jsonargparse.Namespace(devices=2)))
    logger.log_hyperparams({"data": Data(), "model": Model(), "optim": Optim()})
    logger.finalize("success")
    assert stored_params(db_url) == {
        "lrs": [0.1, 0.01],
        "sched": {"warmup": 10, "total": 10},
        "must": "???",
        "only_list": [1, [2, 3]],
        "cli": {"seed": 3},
        "trainer": {"devices": 2},
        "data": {"sizes": [8, 16]},
        "model": {"depth": 2, "widths": [4, 8]},
        "optim": {"lr": 0.1, "betas": [0.9, 0.99]},
    }


def test_checkpoints_save_top_k_deleted_are_marked_removed(db_url: str, tmp_path: Path) -> None:
    """Verify the files ModelCheckpoint deletes (save_top_k) keep their rows, marked removed,
    and that exactly the files still on disk are not."""
    seed_everything(0)
    logger = SQLTrackLogger("exp", db_url)
    trainer = Trainer(
        logger=logger,
        max_epochs=4,
        default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(monitor="val/loss", save_top_k=1, save_last=True)],
        **QUIET,
    )
    trainer.fit(TinyModel(), regression_data(), regression_data(seed=1))
    rows = query(
        db_url, "SELECT path, removed_at FROM checkpoints WHERE kind = 'checkpoint' ORDER BY id"
    )
    removed = {path for path, at in rows if not _missing(at)}
    kept = {path for path, at in rows if _missing(at)}
    assert removed and removed.isdisjoint(kept)
    assert all(not Path(path).exists() for path in removed)
    assert all(Path(path).exists() for path in kept)
