"""Overhead of `SQLTrackLogger` on a small Lightning loop, against CSVLogger, MLFlowLogger, none.

One script run measures six configurations of the same ``Trainer.fit`` (a tiny MLP on
synthetic in-memory regression data, CPU, ``log_every_n_steps=1`` so that every step logs, the
worst case for a logger; train loss logged each step, a validation metric each epoch; the
default ``ModelCheckpoint`` left on, so one checkpoint per epoch, which `SQLTrackLogger`
fingerprints and registers):

- ``logger=False`` (checkpoints go to ``default_root_dir``);
- ``CSVLogger(save_dir=tmpdir)``;
- ``SQLTrackLogger(experiment, "sqlite:///<tmp>/bench.db")``;
- ``SQLTrackLogger(experiment, <pg url>)``, in a schema made for this script run (through
  ``options=-csearch_path%3D<schema>``) and dropped at its end;
- ``MLFlowLogger(experiment, tracking_uri="sqlite:///<tmp>/...db")``: Lightning's own MLflow
  logger, its defaults otherwise (synchronous logging, MLflow's default: one ``log_batch`` a
  step; ``log_model=False``, so checkpoints are not recorded, where sqltrack fingerprints and
  registers them);
- ``MLFlowLogger(experiment, tracking_uri="postgresql+psycopg://.../<database>")``, in a
  database of its own made for this script run (as ``bench_mlflow.py`` does) and dropped at
  its end.

If the PostgreSQL server cannot be reached its rows are skipped with a message, unless
``--require-pg``. MLflow is installed only in ``.venv-bench`` (``scripts/bench`` runs this
script there); without it the MLflow rows are skipped with a message. MLflow's stores are made
and migrated before the first fit, from one template per backend, as in ``bench_mlflow.py``
(``_common.MlflowStores``), and its experiment created with its artifacts under the temporary
directory; it is kept offline and quiet (telemetry off, no logging setup, no server).

Each configuration is warmed up once (the first fit pays imports, allocator and first-use
costs; it also creates the sqltrack tables, as a user's existing database already has them;
it opens MLflow's store, whose connection pool MLflow then keeps for the process),
then ``--repeat`` measurements are taken round-robin: each repetition runs every configuration
once, the order rotated by one each time, so that machine noise (and a database server's
background work, on a small machine) falls on all of them alike. Torch uses one
intra-op thread (``--threads``): the model gains nothing from more, and with two spinning
OpenMP threads a busy 2-CPU machine gave timings that swung tenfold. Each measurement builds a
fresh model, Trainer, logger and temporary directory; only ``trainer.fit()`` is timed
(``time.perf_counter``), Trainer construction is not. ``fit()`` includes the logger's
``finalize()``, so sqltrack's writer has committed every row when it returns (MLflow's calls
are synchronous: its rows are committed when each returns). The figure is
``trainer.global_step / fit wall time`` (steps/s); the table gives the median over repeats,
min / max, and the slowdown against CSVLogger (positive = slower); next to it, the
process's CPU time per step during ``fit()`` (``time.process_time``: all threads, sqltrack's
writer included, the PostgreSQL server not); CPU close to wall time means the logger's
background thread adds no work the main thread waits for. (In a VM, CPU time stolen by
neighbours still counts as CPU time: it is no shelter from a noisy machine.) Target: `SQLTrackLogger` at
most 3% slower than CSVLogger.

After each measured fit (untimed), the sqltrack runs are checked: ``global_step`` train-loss
rows and one validation value per epoch through ``sqltrack_core.connect(url).metrics(run_id)``,
status ``completed``, and the checkpoints registered; any warning from sqltrack fails the
script too. The MLflow runs likewise, through ``MlflowClient.get_metric_history``, status
``FINISHED``. A benchmark of a logger that silently logged nothing would be worthless.

Usage::

    python tests/benchmarks/bench_lightning.py --repeat 5
    python tests/benchmarks/bench_lightning.py --repeat 1 --epochs 2   # smoke check
    python tests/benchmarks/bench_lightning.py --pg-url postgresql://... --require-pg
    python tests/benchmarks/bench_lightning.py --profile sqlite-sqltrack   # cProfile one fit
    .venv-bench/bin/python tests/benchmarks/bench_lightning.py --repeat 1 --epochs 1  # with MLflow

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# before Lightning is imported: its import-time and fit-time advice is not under test
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from _common import (  # noqa: E402
    DEFAULT_PG_URL,
    bench_schema,
    git_revision,
    mlflow_missing,
    mlflow_note,
    open_mlflow_stores,
    pg_admin,
    quiet_mlflow,
    with_search_path,
)
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch import __version__ as lightning_version  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import sqltrack_core as sqltrack  # noqa: E402
from sqltrack_core.errors import SQLTrackWarning  # noqa: E402
from sqltrack_integrations.lightning import SQLTrackLogger  # noqa: E402

# after the import, which sets lightning.pytorch's level to INFO: its info lines are not wanted
for _name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
quiet_mlflow()  # before MLFlowLogger imports MLflow (if it is installed)

EXPERIMENT = "bench-lightning"
TARGET_PCT = 3.0  # SQLTrackLogger at most this much slower than CSVLogger

# -- the training loop ------------------------------------------------------------------------


class MLP(LightningModule):
    """A tiny MLP regressor: train/loss each step, val/loss once per epoch (mean of batches)."""

    def __init__(self, features: int = 16, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()  # logged once through log_hyperparams, as a user's would
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def make_data(n: int, features: int, batch_size: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x @ torch.linspace(-1.0, 1.0, features).unsqueeze(1) + 0.1 * torch.randn(
        n, 1, generator=generator
    )
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


@dataclass
class Loop:
    epochs: int
    batches: int
    batch_size: int
    val_batches: int
    features: int = 16
    train: DataLoader = field(init=False)
    val: DataLoader = field(init=False)

    def __post_init__(self) -> None:
        self.train = make_data(self.batches * self.batch_size, self.features, self.batch_size, 0)
        self.val = make_data(self.val_batches * self.batch_size, self.features, self.batch_size, 1)

    @property
    def steps(self) -> int:
        return self.epochs * self.batches


# -- configurations ---------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    key: str
    make_logger: Callable[[Path], Any]  # fresh tmp dir -> logger (or False)
    url: str | None = None  # a sqltrack database, to check after each fit
    mlflow_uri: str | None = None  # an MLflow tracking store, to check after each fit
    steps_per_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # this process's CPU time during fit()


def configurations(tmp: Path, pg_url: str | None, mlflow_uris: dict[str, str]) -> list[Config]:
    """The configurations; `mlflow_uris` maps "sqlite" / "postgresql" to MLflow's stores."""
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    configs = [
        Config("logger=False", "none", lambda d: False),
        Config("CSVLogger", "csv", lambda d: CSVLogger(save_dir=d)),
        Config(
            "SQLTrackLogger, SQLite",
            "sqlite-sqltrack",
            lambda d: SQLTrackLogger(EXPERIMENT, sqlite_url),
            sqlite_url,
        ),
    ]
    if pg_url is not None:
        configs.append(
            Config(
                "SQLTrackLogger, PostgreSQL",
                "pg-sqltrack",
                lambda d: SQLTrackLogger(EXPERIMENT, pg_url),
                pg_url,
            )
        )
    for backend, key, name in (
        ("sqlite", "sqlite-mlflow", "SQLite"),
        ("postgresql", "pg-mlflow", "PostgreSQL"),
    ):
        uri = mlflow_uris.get(backend)
        if uri is not None:
            configs.append(
                Config(
                    f"MLFlowLogger, {name}",
                    key,
                    lambda d, uri=uri: MLFlowLogger(EXPERIMENT, tracking_uri=uri),
                    mlflow_uri=uri,
                )
            )
    return configs


# -- one measurement --------------------------------------------------------------------------


def fit_once(
    config: Config, loop: Loop, root: Path, profile: Path | None = None
) -> tuple[float, float, int, Any]:
    """One fit in a fresh directory: (wall and CPU seconds of fit(), global_step, logger)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{config.key}-", dir=root))
    try:
        torch.manual_seed(0)
        model = MLP(features=loop.features)
        logger = config.make_logger(workdir)
        trainer = Trainer(
            max_epochs=loop.epochs,
            accelerator="cpu",
            devices=1,
            logger=logger,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            default_root_dir=workdir,
        )
        gc.collect()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", SQLTrackWarning)
            if profile is None:
                t, c = time.perf_counter(), time.process_time()
                trainer.fit(model, loop.train, loop.val)
                elapsed, cpu = time.perf_counter() - t, time.process_time() - c
            else:
                import cProfile

                profiler = cProfile.Profile()
                t, c = time.perf_counter(), time.process_time()
                profiler.runcall(trainer.fit, model, loop.train, loop.val)
                elapsed, cpu = time.perf_counter() - t, time.process_time() - c
                profiler.dump_stats(profile)
        ours = [str(w.message) for w in seen if issubclass(w.category, SQLTrackWarning)]
        if ours:
            raise RuntimeError(f"{config.label}: sqltrack warned during fit: {ours}")
        if trainer.global_step != loop.steps:
            raise RuntimeError(
                f"{config.label}: {trainer.global_step} steps, expected {loop.steps}"
            )
        return elapsed, cpu, trainer.global_step, logger
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_recorded(config: Config, logger: Any, loop: Loop) -> None:
    """The run holds what the fit logged; raises otherwise (untimed)."""
    if config.mlflow_uri is not None:
        check_mlflow(config, logger, loop)
    if config.url is None:
        return
    run_id = logger.run_id
    if run_id is None:
        raise RuntimeError(f"{config.label}: the logger never created its run")
    tracker = sqltrack.connect(config.url)
    try:
        df = tracker.metrics(run_id)
        train = int(df["train/loss"].notna().sum()) if "train/loss" in df else 0
        val = int(df["val/loss"].notna().sum()) if "val/loss" in df else 0
        status = tracker.run_info(run_id)["status"]
        mark = "?" if config.url.startswith("sqlite") else "%s"  # the driver's placeholder
        ckpts = tracker.query(
            f"SELECT kind, count(*) AS n FROM checkpoints WHERE run_id = {mark} GROUP BY kind",
            [run_id],
        )
        kinds = {str(k): int(n) for k, n in zip(ckpts["kind"], ckpts["n"], strict=True)}
    finally:
        tracker.close()
    problems = []
    if train != loop.steps:
        problems.append(f"{train} train/loss rows, expected {loop.steps}")
    if val != loop.epochs:
        problems.append(f"{val} val/loss values, expected {loop.epochs}")
    if status != "completed":
        problems.append(f"status {status!r}, expected 'completed'")
    if kinds.get("checkpoint", 0) != loop.epochs:
        problems.append(
            f"checkpoints registered {kinds}, expected {loop.epochs} of kind checkpoint"
        )
    if problems:
        raise RuntimeError(f"{config.label}, run {run_id}: " + "; ".join(problems))


def check_mlflow(config: Config, logger: Any, loop: Loop) -> None:
    """The MLflow run holds every train/loss and val/loss value and has finished (untimed)."""
    from mlflow import MlflowClient

    client = MlflowClient(config.mlflow_uri)
    run_id = logger.run_id
    train = len(client.get_metric_history(run_id, "train/loss"))
    val = len(client.get_metric_history(run_id, "val/loss"))
    status = client.get_run(run_id).info.status
    problems = []
    if train != loop.steps:
        problems.append(f"{train} train/loss values, expected {loop.steps}")
    if val != loop.epochs:
        problems.append(f"{val} val/loss values, expected {loop.epochs}")
    if status != "FINISHED":
        problems.append(f"status {status!r}, expected 'FINISHED'")
    if problems:
        raise RuntimeError(f"{config.label}, MLflow run {run_id}: " + "; ".join(problems))


# -- report -----------------------------------------------------------------------------------


def report(
    configs: list[Config],
    loop: Loop,
    args: argparse.Namespace,
    pg_note: str,
    mlflow_note: str,
    total_s: float,
) -> str:
    import sqlite3

    lines = [
        f"### SQLTrackLogger overhead: {loop.epochs} epochs x {loop.batches} batches of "
        f"{loop.batch_size} ({loop.steps} steps, log_every_n_steps=1), medians of {args.repeat}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); lightning {lightning_version}",
        f"- databases: SQLite {sqlite3.sqlite_version}; {pg_note}",
        f"- MLflow: {mlflow_note}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"sqltrack-core {sqltrack.__version__} @ {git_revision()}; script took {total_s:.0f} s",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        "| configuration | steps/s (median) | min / max | fit (s, median) | vs CSVLogger "
        "| CPU ms/step (median) | CPU vs CSVLogger |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    csv = next(c for c in configs if c.key == "csv")
    csv_median = statistics.median(csv.steps_per_s)
    csv_cpu = statistics.median(csv.cpu_s)
    verdicts = []
    for c in configs:
        median = statistics.median(c.steps_per_s)
        slowdown = 100.0 * (csv_median / median - 1.0)  # extra time per step vs CSVLogger
        vs = "baseline" if c is csv else f"{slowdown:+.1f}%"
        if c.url is not None:
            ok = slowdown <= TARGET_PCT
            vs = f"**{vs}**" + ("" if ok else " ✗")
            verdicts.append(f"{c.label}: {slowdown:+.1f}% ({'meets' if ok else 'misses'} target)")
        cpu = statistics.median(c.cpu_s)
        cpu_vs = "baseline" if c is csv else f"{100.0 * (cpu / csv_cpu - 1.0):+.1f}%"
        lines.append(
            f"| {c.label} | {median:,.0f} | {min(c.steps_per_s):,.0f} / "
            f"{max(c.steps_per_s):,.0f} | {loop.steps / median:.2f} | {vs} "
            f"| {1000 * cpu / loop.steps:.3f} | {cpu_vs} |"
        )
    lines += [
        "",
        f"Target: SQLTrackLogger at most {TARGET_PCT:g}% slower than CSVLogger "
        "(slowdown = CSV's median steps/s / this one's - 1, i.e. extra wall time per step; "
        "positive = slower).",
        "Verdict (on wall time): " + "; ".join(verdicts) + ".",
        "CPU: this process's CPU time during fit() (`time.process_time`, all its threads, so "
        "sqltrack's writer thread too, but not the PostgreSQL server), per step.",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the MLP is too small to gain from more, and "
        "spinning OpenMP threads make a loaded small machine's timings swing several-fold)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--require-pg", action="store_true", help="fail, not skip, without a PostgreSQL server"
    )
    parser.add_argument(
        "--profile",
        metavar="CONFIG",
        default=None,
        help="instead of benchmarking, cProfile one fit of CONFIG (none, csv, sqlite-sqltrack, "
        "pg-sqltrack, sqlite-mlflow, pg-mlflow) after a warm-up and print the top costs",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loop = Loop(args.epochs, args.batches, args.batch_size, args.val_batches)

    schema, pg_note = bench_schema(args.pg_url, "bench_lightning", require=args.require_pg)
    mlflow_text = mlflow_note(
        "database tracking store, no server; MLFlowLogger's defaults: "
        "synchronous logging, log_model=False (checkpoints not recorded)"
    )
    try:
        with (
            tempfile.TemporaryDirectory(prefix="sqltrack-bench-lightning-") as tmp_name,
            contextlib.ExitStack() as stack,  # MLflow's stores: dropped before tmp goes
        ):
            tmp = Path(tmp_name)
            pg = None if schema is None else with_search_path(args.pg_url, schema)
            mlflow_uris = (
                {}
                if mlflow_missing()
                else open_mlflow_stores(stack, args.pg_url, schema is not None, tmp, [EXPERIMENT])
            )
            configs = configurations(tmp, pg, mlflow_uris)
            if args.profile is not None:
                return profile(configs, loop, tmp, args)
            for c in configs:  # warm-up, not counted
                *_, logger = fit_once(c, loop, tmp)
                check_recorded(c, logger, loop)
            for rep in range(args.repeat):
                order = configs[rep % len(configs) :] + configs[: rep % len(configs)]
                for c in order:
                    elapsed, cpu, steps, logger = fit_once(c, loop, tmp)
                    check_recorded(c, logger, loop)
                    c.steps_per_s.append(steps / elapsed)
                    c.cpu_s.append(cpu)
                print(
                    f"repeat {rep + 1}/{args.repeat}: "
                    + ", ".join(f"{c.key} {c.steps_per_s[-1]:,.0f}" for c in configs)
                    + " steps/s",
                    file=sys.stderr,
                )
    finally:
        if schema is not None:
            pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
    print(report(configs, loop, args, pg_note, mlflow_text, time.perf_counter() - started))
    return 0


def profile(configs: list[Config], loop: Loop, tmp: Path, args: argparse.Namespace) -> int:
    import pstats

    config = next((c for c in configs if c.key == args.profile), None)
    if config is None:
        print(f"error: no configuration {args.profile!r} here", file=sys.stderr)
        return 2
    *_, logger = fit_once(config, loop, tmp)  # warm-up
    check_recorded(config, logger, loop)
    out = tmp / "fit.prof"
    elapsed, _, steps, logger = fit_once(config, loop, tmp, profile=out)
    check_recorded(config, logger, loop)
    print(f"{config.label}: {steps} steps in {elapsed:.2f} s under cProfile")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.profile_top)
    stats.sort_stats("tottime").print_stats(args.profile_top)
    # the logger's own share (main thread only: the writer thread is not profiled)
    stats.sort_stats("cumulative").print_stats("sqltrack|loggers", args.profile_top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
