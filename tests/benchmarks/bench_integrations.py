"""Overhead of the Hugging Face and Keras callbacks on tiny training loops, vs none, CSV, MLflow.

One script run measures two suites, each on CPU with every step (HF) or epoch (Keras) logged:

Hugging Face ``transformers.Trainer.train()`` on a 2-layer ``BertForMaskedLM`` built from a
small ``BertConfig`` (no hub access, ``HF_HUB_OFFLINE=1``) and synthetic token ids,
``logging_steps=1`` (the worst case for a callback: loss, grad_norm and learning_rate each
optimizer step), ``save_strategy="no"`` (the final weights are still fingerprinted and
registered by the callback), the ``PrinterCallback`` removed:

- no callback, ``report_to="none"`` (the baseline). There is no file-logging row like Keras'
  CSVLogger: the Trainer keeps its log in memory (``state.log_history``) and writes
  ``trainer_state.json`` only with a checkpoint, so with ``save_strategy="no"`` it writes no
  file at all; its one file logger, TensorBoard (``report_to="tensorboard"``), needs a package
  this project does not install;
- ``SQLTrackCallback(experiment, "sqlite:///<tmp>/bench.db")``, ``report_to="none"``;
- ``SQLTrackCallback(experiment, <pg url>)``;
- ``report_to="mlflow"``: transformers' own ``MLflowCallback``, configured as its users do,
  through ``MLFLOW_TRACKING_URI`` (a SQLite store, ``sqlite:///<tmp>/...db``) and
  ``MLFLOW_EXPERIMENT_NAME``. It starts a run, logs the TrainingArguments and the model config
  as params, then each step's metrics with ``synchronous=False`` (MLflow's queue and worker
  thread); its ``on_train_end`` calls ``mlflow.end_run()``, which waits for the queue;
- ``report_to="mlflow"`` with an MLflow store on PostgreSQL.

Keras 3 ``model.fit()`` (``KERAS_BACKEND=torch``) of a small Dense regressor on synthetic numpy
data, several epochs, ``verbose=0``:

- no callback;
- ``keras.callbacks.CSVLogger(<tmp>/log.csv)`` (the baseline for the target);
- ``SQLTrackKerasCallback(experiment, "sqlite:///...")`` (one row per epoch);
- ``SQLTrackKerasCallback(experiment, <pg url>)``;
- ``SQLTrackKerasCallback(experiment, "sqlite:///...", log_every_n_batches=1)`` (a row per
  batch, the worst case);
- ``mlflow.keras.MlflowCallback()`` (MLflow's own; one row per epoch, its default) on a SQLite
  store, inside ``with mlflow.start_run(experiment_id=...)``: it needs an active run, and
  starting and ending it are timed, as sqltrack's callback starts and finishes its run inside
  ``fit()``. It logs the optimizer's config as params and the model summary as an artifact
  (under the temporary directory) when training begins, then each epoch's logs with
  ``synchronous=False``; ``end_run()`` waits for them;
- the same on PostgreSQL;
- ``MlflowCallback(log_every_epoch=False, log_every_n_steps=1)`` on SQLite (a row per batch).

PostgreSQL runs go into a schema made for this script run (through
``options=-csearch_path%3D<schema>``) and dropped at its end. If the server cannot be reached
those rows are skipped with a message, unless ``--require-pg``. MLflow is installed only in
``.venv-bench`` (``scripts/bench`` runs this script there); without it the MLflow rows are
skipped with a message. As in ``bench_lightning.py``, MLflow gets one store per backend for the
script run, made and migrated before the first run (``_common.MlflowStores``; on PostgreSQL a
database of its own, dropped at the end) and holding the experiments already; it is kept offline
and quiet (telemetry off, no logging setup, no server, ``HF_HUB_OFFLINE=1``). With
``synchronous=False`` MLflow's worker polls its queue with a 1 s timeout, so each run's end may
wait up to a second with nothing to do: a fixed cost per run that its users pay too, counted.

As in ``bench_lightning.py``: each configuration is warmed up once (first-use costs; it also
creates the sqltrack tables, as a user's existing database already has them), then
``--repeat`` measurements are taken round-robin within a suite, the order rotated by one each
repetition, so that machine noise falls on all configurations alike. Torch uses one intra-op
thread (``--threads``). Each measurement builds a fresh model, Trainer / compiled model,
callback and temporary directory; only ``train()`` / ``fit()`` is timed
(``time.perf_counter``). Both include the callback's ``on_train_end``, which finishes the run,
so sqltrack's writer has committed every row when they return (and MLflow's queue is drained). The figure is steps/s:
``trainer.state.global_step / train() wall time`` (HF), total batches / ``fit()`` wall time
(Keras); the table gives the median over repeats, min / max, and the slowdown against the
baselines (positive = slower); next to it, the process's CPU time per step
(``time.process_time``: all threads, sqltrack's writer included, the PostgreSQL server not).
Target: each sqltrack configuration at most 3% slower than the suite's baseline (HF: no
callback; Keras: CSVLogger).

After each measured run (untimed), the sqltrack runs are checked through
``sqltrack_core.connect(url).metrics(run_id)``: HF, one ``loss`` per optimizer step; Keras,
one ``loss`` per epoch (per batch with ``log_every_n_batches=1``, plus one ``epoch`` value per
epoch); status ``completed`` and the final weights registered; any warning from sqltrack fails
the script too. The MLflow runs likewise, through ``MlflowClient.get_metric_history`` (the same
``loss`` counts), status ``FINISHED``. A benchmark of a callback that silently logged nothing
would be worthless.

Usage::

    python tests/benchmarks/bench_integrations.py --repeat 5
    python tests/benchmarks/bench_integrations.py --repeat 1 --only keras   # one suite
    python tests/benchmarks/bench_integrations.py --pg-url postgresql://... --require-pg
    python tests/benchmarks/bench_integrations.py --profile hf-sqlite   # cProfile one run
    .venv-bench/bin/python tests/benchmarks/bench_integrations.py --repeat 1   # with MLflow

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import os

# before Keras and transformers are imported: the backend, and no hub access
os.environ["KERAS_BACKEND"] = "torch"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import argparse
import contextlib
import datetime as dt
import gc
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

# import-time and train-time advice of the frameworks is not under test
warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
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
from transformers import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

import sqltrack_core as sqltrack  # noqa: E402
from sqltrack_core.errors import SQLTrackWarning  # noqa: E402
from sqltrack_integrations.keras import SQLTrackKerasCallback  # noqa: E402
from sqltrack_integrations.transformers import SQLTrackCallback  # noqa: E402

transformers.logging.set_verbosity_error()
quiet_mlflow()  # before MLflow is imported (only by the MLflow configurations)

TARGET_PCT = 3.0  # each sqltrack configuration at most this much slower than the baseline
MLFLOW_BACKENDS = (("sqlite", "sqlite", "SQLite"), ("postgresql", "pg", "PostgreSQL"))
# MLflow 3.17's AsyncLoggingQueue: its worker waits on queue.get(timeout=1) and only then sees
# the stop event, so each run's end can wait up to a second with nothing to do
ASYNC_NOTE = (
    "Its async worker polls its queue with a 1 s timeout, so each run's end may wait up to ~1 s "
    "idle: wall time well above CPU time, a fixed cost per run."
)


# -- the training loops -----------------------------------------------------------------------


class TokenData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token ids for masked-LM (labels: the ids), as in tests/_hf_models.py."""

    def __init__(self, n: int, length: int = 16, vocab: int = 64, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, vocab, (n, length), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.ids[index]
        return {"input_ids": ids, "labels": ids.clone()}


def tiny_bert() -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(config)


@dataclass
class Measurement:
    elapsed: float  # wall seconds of train() / fit()
    cpu: float  # this process's CPU seconds during it
    steps: int
    callback: Any  # the sqltrack callback, or None
    mlflow_run_id: str | None = None  # the MLflow run, for an MLflow configuration


@dataclass
class Config:
    label: str
    key: str
    make_callback: Callable[[Path], Any]  # fresh tmp dir -> callback (or None)
    url: str | None = None  # a sqltrack database, to check after each run
    per_batch: bool = False  # Keras: a row per batch (log_every_n_batches / log_every_n_steps=1)
    mlflow_uri: str | None = None  # an MLflow tracking store, to check after each run
    steps_per_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


def timed(config: Config, fn: Callable[[], Any], profile: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds of `fn()`; sqltrack warnings fail it."""
    gc.collect()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", SQLTrackWarning)
        if profile is None:
            t, c = time.perf_counter(), time.process_time()
            fn()
            elapsed, cpu = time.perf_counter() - t, time.process_time() - c
        else:
            import cProfile

            profiler = cProfile.Profile()
            t, c = time.perf_counter(), time.process_time()
            profiler.runcall(fn)
            elapsed, cpu = time.perf_counter() - t, time.process_time() - c
            profiler.dump_stats(profile)
    ours = [str(w.message) for w in seen if issubclass(w.category, SQLTrackWarning)]
    if ours:
        raise RuntimeError(f"{config.label}: sqltrack warned during training: {ours}")
    return elapsed, cpu


class Suite:
    name: str
    title: str
    baseline: str  # key of the target's baseline
    also_against: tuple[str, ...] = ()  # further keys to compare with
    steps: int
    configs: list[Config]
    notes: tuple[str, ...] = ()  # lines under the table
    mlflow_notes: tuple[str, ...] = ()  # the same, when it has MLflow rows

    def run_once(self, config: Config, workdir: Path, profile: Path | None) -> Measurement:
        raise NotImplementedError

    def expected(self, config: Config) -> dict[str, int]:
        """Metric key -> the number of values the run must hold."""
        raise NotImplementedError

    def header(self) -> str:
        raise NotImplementedError


class HFSuite(Suite):
    name = "hf"
    title = "SQLTrackCallback (transformers.Trainer)"
    baseline = "hf-none"

    experiment = "bench-integrations-hf"
    notes = (
        'Baseline: no callback, `report_to="none"`; no file-logging row: the Trainer keeps '
        'its log in memory (`state.log_history`) and, with `save_strategy="no"`, writes no '
        "file (`trainer_state.json` only comes with a checkpoint).",
    )
    mlflow_notes = (
        'MLflow: `report_to="mlflow"` (transformers\' MLflowCallback, `MLFLOW_TRACKING_URI` '
        "and `MLFLOW_EXPERIMENT_NAME` set): params at the start, metrics each step with "
        "`synchronous=False`, `end_run()` (which drains MLflow's queue) inside `train()`. "
        + ASYNC_NOTE,
    )

    def __init__(
        self,
        args: argparse.Namespace,
        tmp: Path,
        pg_url: str | None,
        mlflow_uris: dict[str, str],
    ) -> None:
        self.epochs = args.hf_epochs
        self.samples = args.hf_samples
        self.batch_size = args.hf_batch_size
        self.steps = self.epochs * -(-self.samples // self.batch_size)
        self.data = TokenData(self.samples)
        self.mlflow_runs: set[str] = set()  # seen, so that an old run is not checked again
        sqlite_url = f"sqlite:///{tmp / 'bench-hf.db'}"
        experiment = self.experiment
        self.configs = [
            Config("no callback", "hf-none", lambda d: None),
            Config(
                "SQLTrackCallback, SQLite",
                "hf-sqlite",
                lambda d: SQLTrackCallback(experiment, sqlite_url),
                sqlite_url,
            ),
        ]
        if pg_url is not None:
            self.configs.append(
                Config(
                    "SQLTrackCallback, PostgreSQL",
                    "hf-pg",
                    lambda d: SQLTrackCallback(experiment, pg_url),
                    pg_url,
                )
            )
        for backend, short, name in MLFLOW_BACKENDS:
            if backend in mlflow_uris:
                self.configs.append(
                    Config(
                        f'report_to="mlflow", {name}',
                        f"hf-mlflow-{short}",
                        lambda d: None,
                        mlflow_uri=mlflow_uris[backend],
                    )
                )

    def run_once(self, config: Config, workdir: Path, profile: Path | None) -> Measurement:
        torch.manual_seed(0)
        callback = config.make_callback(workdir)
        if config.mlflow_uri is not None:
            import mlflow

            # as its users configure transformers' MLflowCallback, before train()
            os.environ["MLFLOW_TRACKING_URI"] = config.mlflow_uri
            os.environ["MLFLOW_EXPERIMENT_NAME"] = self.experiment
            mlflow.set_tracking_uri(config.mlflow_uri)  # a URI set earlier would win over the env
        args = TrainingArguments(
            output_dir=str(workdir),
            per_device_train_batch_size=self.batch_size,
            num_train_epochs=self.epochs,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none" if config.mlflow_uri is None else "mlflow",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=tiny_bert(),
            args=args,
            train_dataset=self.data,
            callbacks=None if callback is None else [callback],
        )
        trainer.remove_callback(PrinterCallback)
        elapsed, cpu = timed(config, trainer.train, profile)
        steps = trainer.state.global_step
        if steps != self.steps:
            raise RuntimeError(f"{config.label}: {steps} steps, expected {self.steps}")
        run_id = None
        if config.mlflow_uri is not None:
            if mlflow.active_run() is not None:
                raise RuntimeError(f"{config.label}: MLflowCallback left its run open")
            last = mlflow.last_active_run()  # the run MLflowCallback started, if it did
            if last is not None and last.info.run_id not in self.mlflow_runs:
                run_id = last.info.run_id
                self.mlflow_runs.add(run_id)
        return Measurement(elapsed, cpu, steps, callback, run_id)

    def expected(self, config: Config) -> dict[str, int]:
        return {"loss": self.steps}

    def header(self) -> str:
        return (
            f"{self.epochs} epochs x {self.steps // self.epochs} batches of {self.batch_size} "
            f"({self.steps} optimizer steps, logging_steps=1, save_strategy='no'), "
            "2-layer BertForMaskedLM (hidden 32, 16 tokens)"
        )


class KerasSuite(Suite):
    name = "keras"
    title = "SQLTrackKerasCallback (Keras 3 fit, torch backend)"
    baseline = "keras-csv"
    also_against = ("keras-none",)
    experiment = "bench-integrations-keras"
    mlflow_notes = (
        "MLflow: `mlflow.keras.MlflowCallback` inside `with mlflow.start_run()` (it needs an "
        "active run; both timed): params and the model summary (an artifact) at the start, "
        "metrics with `synchronous=False`, drained by `end_run()`. " + ASYNC_NOTE,
    )

    def __init__(
        self,
        args: argparse.Namespace,
        tmp: Path,
        pg_url: str | None,
        mlflow_uris: dict[str, str],
    ) -> None:
        self.epochs = args.keras_epochs
        self.batches = args.keras_batches
        self.batch_size = args.keras_batch_size
        self.features = 16
        self.steps = self.epochs * self.batches
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(self.batches * self.batch_size, self.features)).astype("float32")
        weights = np.linspace(-1.0, 1.0, self.features, dtype="float32")[:, None]
        self.y = self.x @ weights + 0.1 * rng.normal(size=(len(self.x), 1)).astype("float32")
        sqlite_url = f"sqlite:///{tmp / 'bench-keras.db'}"
        experiment = self.experiment
        self.configs = [
            Config("no callback", "keras-none", lambda d: None),
            Config(
                "CSVLogger", "keras-csv", lambda d: keras.callbacks.CSVLogger(str(d / "log.csv"))
            ),
            Config(
                "SQLTrackKerasCallback, SQLite",
                "keras-sqlite",
                lambda d: SQLTrackKerasCallback(experiment, sqlite_url),
                sqlite_url,
            ),
        ]
        if pg_url is not None:
            self.configs.append(
                Config(
                    "SQLTrackKerasCallback, PostgreSQL",
                    "keras-pg",
                    lambda d: SQLTrackKerasCallback(experiment, pg_url),
                    pg_url,
                )
            )
        self.configs.append(
            Config(
                "SQLTrackKerasCallback, SQLite, log_every_n_batches=1",
                "keras-sqlite-batches",
                lambda d: SQLTrackKerasCallback(experiment, sqlite_url, log_every_n_batches=1),
                sqlite_url,
                per_batch=True,
            )
        )
        for backend, short, name in MLFLOW_BACKENDS:
            if backend in mlflow_uris:
                self.configs.append(
                    Config(
                        f"MlflowCallback, {name}",
                        f"keras-mlflow-{short}",
                        lambda d: mlflow_keras_callback(),
                        mlflow_uri=mlflow_uris[backend],
                    )
                )
        if "sqlite" in mlflow_uris:
            self.configs.append(
                Config(
                    "MlflowCallback, SQLite, log_every_n_steps=1",
                    "keras-mlflow-sqlite-batches",
                    lambda d: mlflow_keras_callback(log_every_epoch=False, log_every_n_steps=1),
                    mlflow_uri=mlflow_uris["sqlite"],
                    per_batch=True,
                )
            )

    def run_once(self, config: Config, workdir: Path, profile: Path | None) -> Measurement:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((self.features,)),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        callback = config.make_callback(workdir)

        def fit() -> None:
            model.fit(
                self.x,
                self.y,
                batch_size=self.batch_size,
                epochs=self.epochs,
                shuffle=False,
                verbose=0,
                callbacks=[] if callback is None else [callback],
            )

        run_ids: list[str] = []
        if config.mlflow_uri is None:
            elapsed, cpu = timed(config, fit, profile)
        else:
            import mlflow

            mlflow.set_tracking_uri(config.mlflow_uri)
            found = mlflow.MlflowClient(config.mlflow_uri).get_experiment_by_name(self.experiment)
            assert found is not None  # made with the store
            experiment_id = found.experiment_id

            def fit_in_run() -> None:  # MlflowCallback logs to the active run
                with mlflow.start_run(experiment_id=experiment_id) as run:
                    run_ids.append(run.info.run_id)
                    fit()

            elapsed, cpu = timed(config, fit_in_run, profile)
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if steps != self.steps:
            raise RuntimeError(f"{config.label}: {steps} steps, expected {self.steps}")
        if config.key == "keras-csv":
            rows = (workdir / "log.csv").read_text().strip().splitlines()
            if len(rows) != self.epochs + 1:
                raise RuntimeError(f"{config.label}: {len(rows)} CSV lines, expected header+epochs")
        return Measurement(
            elapsed,
            cpu,
            steps,
            callback if config.url is not None else None,
            run_ids[0] if run_ids else None,
        )

    def expected(self, config: Config) -> dict[str, int]:
        loss = self.steps if config.per_batch else self.epochs
        if config.mlflow_uri is not None:
            return {"loss": loss}  # MlflowCallback logs Keras' logs only, no epoch value
        return {"loss": loss, "epoch": self.epochs}

    def header(self) -> str:
        return (
            f"{self.epochs} epochs x {self.batches} batches of {self.batch_size} "
            f"({self.steps} steps), Dense {self.features}-32-32-1, SGD, verbose=0"
        )


def mlflow_keras_callback(**kwargs: Any) -> Any:
    """``mlflow.keras.MlflowCallback(**kwargs)``, imported only when MLflow is installed."""
    from mlflow.keras import MlflowCallback

    return MlflowCallback(**kwargs)


# -- one measurement --------------------------------------------------------------------------


def measure_once(
    suite: Suite, config: Config, root: Path, profile: Path | None = None
) -> Measurement:
    workdir = Path(tempfile.mkdtemp(prefix=f"{config.key}-", dir=root))
    try:
        return suite.run_once(config, workdir, profile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_recorded(suite: Suite, config: Config, m: Measurement) -> None:
    """The run holds what the training logged; raises otherwise (untimed)."""
    if config.mlflow_uri is not None:
        check_mlflow(suite, config, m)
    if config.url is None:
        return
    run_id = m.callback.run_id
    if run_id is None:
        raise RuntimeError(f"{config.label}: the callback never created its run")
    tracker = sqltrack.connect(config.url)
    try:
        df = tracker.metrics(run_id)
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
    for key, want in suite.expected(config).items():
        got = int(df[key].notna().sum()) if key in df else 0
        if got != want:
            problems.append(f"{got} {key} values, expected {want}")
    if status != "completed":
        problems.append(f"status {status!r}, expected 'completed'")
    if kinds.get("final", 0) != 1:
        problems.append(f"checkpoints registered {kinds}, expected 1 of kind final")
    if problems:
        raise RuntimeError(f"{config.label}, run {run_id}: " + "; ".join(problems))


def check_mlflow(suite: Suite, config: Config, m: Measurement) -> None:
    """The MLflow run holds every value expected and has finished; raises otherwise (untimed)."""
    from mlflow import MlflowClient

    if m.mlflow_run_id is None:
        raise RuntimeError(f"{config.label}: no MLflow run was started")
    client = MlflowClient(config.mlflow_uri)
    problems = []
    for key, want in suite.expected(config).items():
        got = len(client.get_metric_history(m.mlflow_run_id, key))
        if got != want:
            problems.append(f"{got} {key} values, expected {want}")
    status = client.get_run(m.mlflow_run_id).info.status
    if status != "FINISHED":
        problems.append(f"status {status!r}, expected 'FINISHED'")
    if problems:
        raise RuntimeError(f"{config.label}, MLflow run {m.mlflow_run_id}: " + "; ".join(problems))


def run_suite(suite: Suite, tmp: Path, repeat: int) -> None:
    configs = suite.configs
    for c in configs:  # warm-up, not counted
        check_recorded(suite, c, measure_once(suite, c, tmp))
    for rep in range(repeat):
        order = configs[rep % len(configs) :] + configs[: rep % len(configs)]
        for c in order:
            m = measure_once(suite, c, tmp)
            check_recorded(suite, c, m)
            c.steps_per_s.append(m.steps / m.elapsed)
            c.cpu_s.append(m.cpu)
        print(
            f"{suite.name} repeat {rep + 1}/{repeat}: "
            + ", ".join(f"{c.key} {c.steps_per_s[-1]:,.0f}" for c in configs)
            + " steps/s",
            file=sys.stderr,
        )


# -- report -----------------------------------------------------------------------------------


def preamble(args: argparse.Namespace, pg_note: str, mlflow_note: str, total_s: float) -> list[str]:
    import sqlite3

    return [
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); transformers {transformers.__version__}; "
        f"keras {keras.__version__} (backend {keras.backend.backend()})",
        f"- databases: SQLite {sqlite3.sqlite_version}; {pg_note}",
        f"- MLflow: {mlflow_note}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"sqltrack-core {sqltrack.__version__} @ {git_revision()}; script took {total_s:.0f} s",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
    ]


def report(suite: Suite, repeat: int) -> str:
    by_key = {c.key: c for c in suite.configs}
    against = [by_key[suite.baseline], *(by_key[k] for k in suite.also_against)]
    lines = [
        f"### {suite.title} overhead: {suite.header()}, medians of {repeat}",
        "",
        "| configuration | steps/s (median) | min / max | train (s, median) | "
        + " | ".join(f"vs {b.label}" for b in against)
        + " | CPU ms/step (median) | CPU vs "
        + against[0].label
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(against) + "---:|---:|",
    ]
    base = against[0]
    base_cpu = statistics.median(base.cpu_s)
    verdicts = []
    for c in suite.configs:
        median = statistics.median(c.steps_per_s)
        cells = []
        for b in against:
            slowdown = 100.0 * (statistics.median(b.steps_per_s) / median - 1.0)
            cell = "baseline" if c is b else f"{slowdown:+.1f}%"
            if b is base and c.url is not None:
                ok = slowdown <= TARGET_PCT
                cell = f"**{cell}**" + ("" if ok else " ✗")
                verdicts.append(
                    f"{c.label}: {slowdown:+.1f}% ({'meets' if ok else 'misses'} target)"
                )
            cells.append(cell)
        cpu = statistics.median(c.cpu_s)
        cpu_vs = "baseline" if c is base else f"{100.0 * (cpu / base_cpu - 1.0):+.1f}%"
        lines.append(
            f"| {c.label} | {median:,.0f} | {min(c.steps_per_s):,.0f} / "
            f"{max(c.steps_per_s):,.0f} | {suite.steps / median:.2f} | "
            + " | ".join(cells)
            + f" | {1000 * cpu / suite.steps:.3f} | {cpu_vs} |"
        )
    lines += [
        "",
        f"Target: each sqltrack configuration at most {TARGET_PCT:g}% slower than "
        f"{base.label} (slowdown = the baseline's median steps/s / this one's - 1, i.e. extra "
        "wall time per step; positive = slower).",
        "Verdict (on wall time): " + "; ".join(verdicts) + ".",
        *suite.notes,
        *(suite.mlflow_notes if any(c.mlflow_uri for c in suite.configs) else ()),
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("hf", "keras"), default=None, help="one suite")
    parser.add_argument("--hf-epochs", type=int, default=4)
    parser.add_argument("--hf-samples", type=int, default=1024, help="training sequences")
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--keras-epochs", type=int, default=8)
    parser.add_argument("--keras-batches", type=int, default=200, help="batches per epoch")
    parser.add_argument("--keras-batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the models are too small to gain from more, "
        "and spinning OpenMP threads make a loaded small machine's timings swing several-fold)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--require-pg", action="store_true", help="fail, not skip, without a PostgreSQL server"
    )
    parser.add_argument(
        "--profile",
        metavar="CONFIG",
        default=None,
        help="instead of benchmarking, cProfile one run of CONFIG (hf-none, hf-sqlite, hf-pg, "
        "hf-mlflow-sqlite, hf-mlflow-pg, keras-none, keras-csv, keras-sqlite, keras-pg, "
        "keras-sqlite-batches, keras-mlflow-sqlite, keras-mlflow-pg, "
        "keras-mlflow-sqlite-batches) after a warm-up and print the top costs",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    schema, pg_note = bench_schema(args.pg_url, "bench_integrations", require=args.require_pg)
    mlflow_text = mlflow_note("database tracking store, no server")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="sqltrack-bench-integrations-") as tmp_name,
            contextlib.ExitStack() as stack,  # MLflow's stores: dropped before tmp goes
        ):
            tmp = Path(tmp_name)
            pg = None if schema is None else with_search_path(args.pg_url, schema)
            experiments = [HFSuite.experiment, KerasSuite.experiment]
            mlflow_uris = (
                {}
                if mlflow_missing()
                else open_mlflow_stores(stack, args.pg_url, schema is not None, tmp, experiments)
            )
            suites: list[Suite] = []
            if args.only in (None, "hf"):
                suites.append(HFSuite(args, tmp, pg, mlflow_uris))
            if args.only in (None, "keras"):
                suites.append(KerasSuite(args, tmp, pg, mlflow_uris))
            if args.profile is not None:
                return profile(suites, tmp, args)
            for suite in suites:
                run_suite(suite, tmp, args.repeat)
    finally:
        if schema is not None:
            pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
    total_s = time.perf_counter() - started
    lines = [
        "## sqltrack integrations overhead",
        "",
        *preamble(args, pg_note, mlflow_text, total_s),
    ]
    print("\n".join(lines))
    for suite in suites:
        print()
        print(report(suite, args.repeat))
    return 0


def profile(suites: list[Suite], tmp: Path, args: argparse.Namespace) -> int:
    import pstats

    found = [(s, c) for s in suites for c in s.configs if c.key == args.profile]
    if not found:
        print(f"error: no configuration {args.profile!r} here", file=sys.stderr)
        return 2
    suite, config = found[0]
    check_recorded(suite, config, measure_once(suite, config, tmp))  # warm-up
    out = tmp / "train.prof"
    m = measure_once(suite, config, tmp, profile=out)
    check_recorded(suite, config, m)
    print(f"{config.label}: {m.steps} steps in {m.elapsed:.2f} s under cProfile")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.profile_top)
    stats.sort_stats("tottime").print_stats(args.profile_top)
    # the callback's own share (main thread only: the writer thread is not profiled)
    stats.sort_stats("cumulative").print_stats("sqltrack", args.profile_top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
