"""sqltrack-core against MLflow's tracking store, on a SQLite file and on PostgreSQL.

MLflow (``tests/benchmarks/requirements.txt``; ``scripts/bench`` installs it into
``.venv-bench``, never into the development venv) is used as a user would: its Python client
on a database tracking store (``sqlite:///<file>``; ``postgresql+psycopg://...``, SQLAlchemy
with the psycopg 3 driver), synchronous logging (MLflow's default), no tracking server. Each
measurement gets fresh stores on both sides: sqltrack a new SQLite file / PostgreSQL schema
(as in ``bench_core.py``); MLflow a copy of an empty store migrated once per backend (a copied
file / ``CREATE DATABASE ... TEMPLATE``), dropped afterwards. For each backend, as medians over
``--repeat`` repetitions, each running the competitors one after the other in an order rotated
every repetition:

- the cost of one call on the training thread: sqltrack ``run.log(6-key dict, step)`` (default
  options: the writer thread writes concurrently) vs ``mlflow.log_metrics(6-key dict, step=)``
  vs a no-op call, ``--log-calls`` calls each (median and p99, ``perf_counter_ns`` around each
  call);
- ingest of a scaled-down workload W (``--runs`` x ``--steps``; 4 train metrics every step, 2
  validation metrics every ``--val-every`` steps) in values/s, from the first value until every
  run has ended: sqltrack ``run.log()`` every step then ``run.finish()``; MLflow
  ``MlflowClient.log_batch`` with the values buffered into chunks of at most 1,000 metrics (the
  store's limit) then ``set_terminated``; MLflow ``mlflow.log_metrics`` every step (the same
  calls as sqltrack's) then ``set_terminated``. Runs are created before the clock starts on
  all sides;
- the analysis "best val/acc and last train/loss per run" over W: ``tracker.runs(metrics=
  {"val/acc": "max", "train/loss": "last"})`` vs MLflow, where ``mlflow.search_runs`` gives
  the latest value of each metric but no maximum, so the best value comes from
  ``MlflowClient.get_metric_history`` per run, as a user would write it (``search_runs`` alone
  is timed too). Both answers are checked against each other and against the workload's own
  numbers (the script fails if they differ); the three are timed alternately;
- the analysis "top ten runs by best val/acc" (min(10, ``--runs``) runs: W's default has 5),
  within W's experiment: ``tracker.runs(metrics={"val/acc": "max"}, order_by="-val/acc:max",
  limit=10)`` vs ``MlflowClient.search_runs`` (the cheaper of MLflow's two searches: no
  DataFrame) + ``get_metric_history(run_id, "val/acc")`` per run, sorted in Python: search can
  order by ``metrics.val/acc``, but that is the latest value, and MLflow 3's public API has no
  maximum over a history, nor the histories of several runs in one call;
- the analysis "one run's history" (W's middle run, as in ``bench_core.py``):
  ``tracker.metrics(run_id)`` (one row per step, the six keys as columns) vs
  ``MlflowClient.get_metric_history(run_id, key)`` for each of the six keys (one key a call is
  all its API offers), assembled into one row per step in plain Python (a DataFrame would add
  time on MLflow's side only).

  Both are checked like the first, against each other and W's own numbers, then timed
  alternately.

The counts of values stored are checked after every ingest. MLflow is kept quiet and offline:
telemetry off (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``), no logging configuration, no
UI or server, artifacts under the temporary directory.

Usage::

    python tests/benchmarks/bench_mlflow.py                 # default sizes, both backends
    python tests/benchmarks/bench_mlflow.py --quick         # smoke check
    python tests/benchmarks/bench_mlflow.py --runs 20 --steps 1000 --backends sqlite

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")  # MLflow's and its dependencies' import-time advice

from _common import (  # noqa: E402
    DEFAULT_PG_URL,
    MlflowStores,
    git_revision,
    new_experiment,
    quiet_mlflow,
)

quiet_mlflow()  # before MLflow is imported: no telemetry, no network, no logging setup of its own

import mlflow  # noqa: E402
import sqlalchemy  # noqa: E402
from bench_core import (  # noqa: E402
    TRAIN_KEYS,
    VAL_KEYS,
    Workload,
    fresh,
    make_workload,
    percentile,
)
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

import sqltrack_core as sqltrack  # noqa: E402

BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
SPEC = {"val/acc": "max", "train/loss": "last"}
KEYS = TRAIN_KEYS + VAL_KEYS
TOP = 10  # "top ten runs"; fewer when W has fewer runs
FULL = {"runs": 5, "steps": 300, "val_every": 30, "log_calls": 300, "repeat": 3, "query_repeat": 9}
QUICK = {"runs": 3, "steps": 100, "val_every": 20, "log_calls": 100, "repeat": 1, "query_repeat": 3}


def fail(message: str) -> None:
    raise RuntimeError(message)


# -- measurements -----------------------------------------------------------------------------


def timed_calls(fn: Callable[..., Any], calls: int) -> list[int]:
    """ns per call of fn(6-key dict, step=i), as in bench_core.py."""
    keys = TRAIN_KEYS + VAL_KEYS
    values = [0.5 + 1e-6 * i for i in range(calls)]
    clock = time.perf_counter_ns
    out = [0] * calls
    for i in range(calls):
        v = values[i]
        d = {keys[0]: v, keys[1]: v, keys[2]: v, keys[3]: v, keys[4]: v, keys[5]: v}
        t = clock()
        fn(d, step=i)
        out[i] = clock() - t
    return out


def summary(prefix: str, ns: list[int]) -> dict[str, float]:
    return {
        f"{prefix}_median_us": statistics.median(ns) / 1000,
        f"{prefix}_p99_us": percentile(ns, 0.99) / 1000,
    }


def call_sqltrack(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    with fresh(backend, args.pg_url, tmp) as db:
        tracker = sqltrack.connect(db.url)
        try:
            run = tracker.start_run("bench-log", name="log-cost")
            cost = timed_calls(run.log, args.log_calls)
            run.finish()
            df = tracker.metrics(run.id)
            if len(df) != args.log_calls:
                fail(f"sqltrack stored {len(df)} steps of {args.log_calls}")
        finally:
            tracker.close()
    return summary("sqltrack_log", cost)


def call_mlflow(stores: MlflowStores, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    with stores.fresh() as uri:
        mlflow.set_tracking_uri(uri)  # for mlflow.start_run and mlflow.log_metrics
        client = MlflowClient(uri)
        experiment = new_experiment(client, "bench-log", tmp)
        with mlflow.start_run(experiment_id=experiment, run_name="log-cost") as run:
            cost = timed_calls(mlflow.log_metrics, args.log_calls)
        stored = len(client.get_metric_history(run.info.run_id, "val/acc"))
        if stored != args.log_calls:
            fail(f"MLflow stored {stored} steps of {args.log_calls}")
    return summary("mlflow_log", cost)


def call_noop(args: argparse.Namespace) -> dict[str, float]:
    def noop(metrics: Any, step: int | None = None) -> None:
        return None

    return summary("noop", timed_calls(noop, args.log_calls))


def ingest_sqltrack(url: str, w: Workload) -> tuple[dict[str, float], Any]:
    """W through run.log() every step and finish(); returns the open tracker, for the query."""
    tracker = sqltrack.connect(url)
    runs = [tracker.start_run("bench-w", name=f"run-{r}") for r in range(w.runs)]
    val_steps = set(w.val_steps)
    train_loss, train_acc, lr_key, grad_key = TRAIN_KEYS
    val_loss, val_acc = VAL_KEYS
    t0 = time.perf_counter()
    for run, (tl, ta, lr, gn, vl, va) in zip(runs, w.data, strict=True):
        log = run.log
        v = 0
        for s in range(w.steps):
            log({train_loss: tl[s], train_acc: ta[s], lr_key: lr[s], grad_key: gn[s]}, step=s)
            if s in val_steps:
                log({val_loss: vl[v], val_acc: va[v]}, step=s)
                v += 1
        run.finish()
    elapsed = time.perf_counter() - t0
    return {"sqltrack_ingest_s": elapsed, "sqltrack_ingest_vps": w.values / elapsed}, tracker


def check_sqltrack(tracker: Any, w: Workload) -> None:
    counts = tracker.query(
        "SELECT count(*) AS n, count(train_loss) AS t, count(val_acc) AS v FROM metrics"
    ).iloc[0]
    expected = (w.runs * w.steps, w.runs * w.steps, w.runs * len(w.val_steps))
    if tuple(int(x) for x in counts) != expected:
        fail(f"sqltrack stored (rows, train/loss, val/acc) {tuple(counts)}, expected {expected}")


def mlflow_runs(client: MlflowClient, experiment: str, w: Workload) -> list[str]:
    return [client.create_run(experiment, run_name=f"run-{r}").info.run_id for r in range(w.runs)]


def ingest_mlflow_batch(uri: str, w: Workload, tmp: Path) -> tuple[dict[str, float], str]:
    """W through MlflowClient.log_batch, buffered in chunks of at most MAX_BATCH metrics."""
    client = MlflowClient(uri)
    experiment = new_experiment(client, "bench-w", tmp)
    run_ids = mlflow_runs(client, experiment, w)
    val_steps = set(w.val_steps)
    train_loss, train_acc, lr_key, grad_key = TRAIN_KEYS
    val_loss, val_acc = VAL_KEYS
    room = MAX_BATCH - len(TRAIN_KEYS) - len(VAL_KEYS)  # a step's values fit after this
    t0 = time.perf_counter()
    for run_id, (tl, ta, lr, gn, vl, va) in zip(run_ids, w.data, strict=True):
        buffer: list[Metric] = []
        v = 0
        for s in range(w.steps):
            ts = int(time.time() * 1000)
            buffer += [
                Metric(train_loss, tl[s], ts, s),
                Metric(train_acc, ta[s], ts, s),
                Metric(lr_key, lr[s], ts, s),
                Metric(grad_key, gn[s], ts, s),
            ]
            if s in val_steps:
                buffer += [Metric(val_loss, vl[v], ts, s), Metric(val_acc, va[v], ts, s)]
                v += 1
            if len(buffer) > room:
                client.log_batch(run_id, metrics=buffer)
                buffer = []
        if buffer:
            client.log_batch(run_id, metrics=buffer)
        client.set_terminated(run_id)
    elapsed = time.perf_counter() - t0
    check_mlflow(client, run_ids, w)
    return {"batch_ingest_s": elapsed, "batch_ingest_vps": w.values / elapsed}, experiment


def ingest_mlflow_step(uri: str, w: Workload, tmp: Path) -> dict[str, float]:
    """W through mlflow.log_metrics every step: the same calls as sqltrack's run.log()."""
    mlflow.set_tracking_uri(uri)  # for mlflow.log_metrics
    client = MlflowClient(uri)
    experiment = new_experiment(client, "bench-w-steps", tmp)
    run_ids = mlflow_runs(client, experiment, w)
    val_steps = set(w.val_steps)
    train_loss, train_acc, lr_key, grad_key = TRAIN_KEYS
    val_loss, val_acc = VAL_KEYS
    log = mlflow.log_metrics
    t0 = time.perf_counter()
    for run_id, (tl, ta, lr, gn, vl, va) in zip(run_ids, w.data, strict=True):
        v = 0
        for s in range(w.steps):
            log(
                {train_loss: tl[s], train_acc: ta[s], lr_key: lr[s], grad_key: gn[s]},
                step=s,
                run_id=run_id,
            )
            if s in val_steps:
                log({val_loss: vl[v], val_acc: va[v]}, step=s, run_id=run_id)
                v += 1
        client.set_terminated(run_id)
    elapsed = time.perf_counter() - t0
    check_mlflow(client, run_ids, w)
    return {"step_ingest_s": elapsed, "step_ingest_vps": w.values / elapsed}


def check_mlflow(client: MlflowClient, run_ids: list[str], w: Workload) -> None:
    """Untimed: the first and last runs hold every value, and all runs have ended."""
    for run_id in {run_ids[0], run_ids[-1]}:
        for key in TRAIN_KEYS + VAL_KEYS:
            n = len(client.get_metric_history(run_id, key))
            expected = len(w.val_steps) if key in VAL_KEYS else w.steps
            if n != expected:
                fail(f"MLflow run {run_id} stored {n} values of {key}, expected {expected}")
    statuses = {client.get_run(r).info.status for r in run_ids}
    if statuses != {"FINISHED"}:
        fail(f"MLflow runs ended with statuses {statuses}")


# -- the analysis -----------------------------------------------------------------------------


def query_sqltrack(tracker: Any) -> Any:
    return tracker.runs("bench-w", metrics=SPEC)


def answer_sqltrack(df: Any) -> dict[str, tuple[float, float]]:
    return {
        str(name): (float(best), float(last))
        for name, best, last in zip(
            df["name"], df["val/acc:max"], df["train/loss:last"], strict=True
        )
    }


def query_mlflow(client: MlflowClient, experiment: str) -> dict[str, tuple[float, float]]:
    """Best val/acc and last train/loss per run, as an MLflow user would get them."""
    df = mlflow.search_runs(experiment_ids=[experiment])
    return {
        name: (max(m.value for m in client.get_metric_history(run_id, "val/acc")), last)
        for run_id, name, last in zip(
            df["run_id"], df["tags.mlflow.runName"], df["metrics.train/loss"], strict=True
        )
    }


def search_mlflow(experiment: str) -> Any:
    return mlflow.search_runs(experiment_ids=[experiment])


def top_sqltrack(tracker: Any, top: int) -> Any:
    return tracker.runs("bench-w", metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=top)


def answer_top_sqltrack(df: Any) -> list[tuple[str, float]]:
    return [(str(n), float(b)) for n, b in zip(df["name"], df["val/acc:max"], strict=True)]


def top_mlflow(client: MlflowClient, experiment: str, top: int) -> list[tuple[str, float]]:
    """The `top` runs by best val/acc: every run's history, sorted here, as a user must.

    ``search_runs(order_by=["metrics.`val/acc` DESC"])`` orders by the latest value, which is
    not the best one, and no public call returns the histories of several runs at once.
    """
    best = [
        (
            run.info.run_name,
            max(m.value for m in client.get_metric_history(run.info.run_id, "val/acc")),
        )
        for run in client.search_runs([experiment])
    ]
    return sorted(best, key=lambda item: item[1], reverse=True)[:top]


def history_sqltrack(tracker: Any, run_id: int) -> Any:
    return tracker.metrics(run_id)


def history_mlflow(client: MlflowClient, run_id: str) -> dict[int, dict[str, float]]:
    """One run's history as step -> {key: value}, from one get_metric_history call per key."""
    rows: dict[int, dict[str, float]] = {}
    for key in KEYS:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(m.step, {})[key] = m.value
    return dict(sorted(rows.items()))


def check_answers(w: Workload, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    expected = {f"run-{r}": (max(d[5]), d[0][-1]) for r, d in enumerate(w.data)}
    for label, got in (("sqltrack runs()", ours), ("MLflow", theirs)):
        if set(got) != set(expected):
            fail(f"{label} returned runs {sorted(got)}, expected {sorted(expected)}")
        for name, (best, last) in expected.items():
            g_best, g_last = got[name]
            if not (math.isclose(g_best, best, rel_tol=1e-12) and math.isclose(g_last, last)):
                fail(
                    f"{label}, {name}: best val/acc {g_best!r}, last train/loss {g_last!r}; "
                    f"expected {best!r}, {last!r}"
                )


def check_top(
    w: Workload, top: int, ours: list[tuple[str, float]], theirs: list[tuple[str, float]]
) -> None:
    """Both name W's `top` runs by best val/acc, best first, with those values."""
    best = [(f"run-{r}", max(d[5])) for r, d in enumerate(w.data)]
    expected = sorted(best, key=lambda item: item[1], reverse=True)[:top]
    for label, got in (("sqltrack runs(order_by=, limit=)", ours), ("MLflow", theirs)):
        if [name for name, _ in got] != [name for name, _ in expected] or not all(
            math.isclose(g, e, rel_tol=1e-12) for (_, g), (_, e) in zip(got, expected, strict=True)
        ):
            fail(f"{label}: top {top} runs {got!r}, expected {expected!r}")


def check_history(w: Workload, r: int, ours: Any, theirs: dict[int, dict[str, float]]) -> None:
    """Both histories of run r hold exactly W's values, one row per step, in step order."""
    val_index = {s: i for i, s in enumerate(w.val_steps)}
    expected = []
    for s in range(w.steps):
        v = val_index.get(s)
        row = {key: w.data[r][k][s] for k, key in enumerate(TRAIN_KEYS)}
        if v is not None:
            row.update({key: w.data[r][4 + k][v] for k, key in enumerate(VAL_KEYS)})
        expected.append((s, row))
    ours_rows = [
        (int(rec["step"]), {k: rec[k] for k in KEYS if not math.isnan(rec[k])})
        for rec in ours.to_dict("records")
    ]
    for label, got in (("sqltrack metrics()", ours_rows), ("MLflow", list(theirs.items()))):
        if [s for s, _ in got] != [s for s, _ in expected]:
            fail(f"{label}: run-{r} has steps {[s for s, _ in got]}, expected 0..{w.steps - 1}")
        for (s, g), (_, e) in zip(got, expected, strict=True):
            if set(g) != set(e) or not all(math.isclose(g[k], e[k]) for k in e):
                fail(f"{label}: run-{r}, step {s}: {g!r}, expected {e!r}")


def median_ms(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Median ms of each function, timed alternately so that all see the same machine load."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:  # warm caches and plans
        fn()
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [1000 * statistics.median(t) for t in times]


# -- one repetition ---------------------------------------------------------------------------


def rotated(items: list[Any], rep: int) -> list[Any]:
    k = rep % len(items)
    return items[k:] + items[:k]


def repetition(
    backend: str,
    stores: MlflowStores,
    w: Workload,
    args: argparse.Namespace,
    tmp: Path,
    rep: int,
) -> dict[str, float]:
    result: dict[str, float] = {}
    calls: list[Callable[[], dict[str, float]]] = [
        lambda: call_sqltrack(backend, args, tmp),
        lambda: call_mlflow(stores, args, tmp),
        lambda: call_noop(args),
    ]
    for measure in rotated(calls, rep):
        result.update(measure())

    with contextlib.ExitStack() as stack:
        db = stack.enter_context(fresh(backend, args.pg_url, tmp))
        batch_uri = stack.enter_context(stores.fresh())
        state: dict[str, Any] = {}

        def sqltrack_w() -> None:
            ingest, tracker = ingest_sqltrack(db.url, w)
            stack.callback(tracker.close)
            check_sqltrack(tracker, w)
            result.update(ingest)
            state["tracker"] = tracker

        def batch_w() -> None:
            mlflow.set_tracking_uri(batch_uri)
            ingest, experiment = ingest_mlflow_batch(batch_uri, w, tmp)
            result.update(ingest)
            state["experiment"] = experiment

        def step_w() -> None:
            with stores.fresh() as uri:
                result.update(ingest_mlflow_step(uri, w, tmp))

        for measure in rotated([sqltrack_w, batch_w, step_w], rep):
            measure()

        mlflow.set_tracking_uri(batch_uri)
        tracker, experiment = state["tracker"], state["experiment"]
        client = MlflowClient(batch_uri)
        check_answers(w, answer_sqltrack(query_sqltrack(tracker)), query_mlflow(client, experiment))
        ours, theirs, search = median_ms(
            [
                lambda: query_sqltrack(tracker),
                lambda: query_mlflow(client, experiment),
                lambda: search_mlflow(experiment),
            ],
            args.query_repeat,
        )
        result.update({"sqltrack_query_ms": ours, "mlflow_query_ms": theirs, "search_ms": search})

        top = min(TOP, w.runs)
        check_top(
            w,
            top,
            answer_top_sqltrack(top_sqltrack(tracker, top)),
            top_mlflow(client, experiment, top),
        )
        result["sqltrack_top_ms"], result["mlflow_top_ms"] = median_ms(
            [
                lambda: top_sqltrack(tracker, top),
                lambda: top_mlflow(client, experiment, top),
            ],
            args.query_repeat,
        )

        r = w.runs // 2  # a run in the middle, as in bench_core.py
        names = tracker.runs("bench-w")
        (ours_id,) = names.loc[names["name"] == f"run-{r}", "id"]
        (theirs_run,) = client.search_runs([experiment], f"tags.mlflow.runName = 'run-{r}'")
        theirs_id = theirs_run.info.run_id
        check_history(
            w, r, history_sqltrack(tracker, int(ours_id)), history_mlflow(client, theirs_id)
        )
        result["sqltrack_history_ms"], result["mlflow_history_ms"] = median_ms(
            [
                lambda: history_sqltrack(tracker, int(ours_id)),
                lambda: history_mlflow(client, theirs_id),
            ],
            args.query_repeat,
        )
    print(
        f"  {backend} #{rep + 1}: log() {result['sqltrack_log_median_us']:.2f} µs vs "
        f"log_metrics {result['mlflow_log_median_us']:.0f} µs; ingest "
        f"{result['sqltrack_ingest_vps']:,.0f} vs batch {result['batch_ingest_vps']:,.0f} vs "
        f"per-step {result['step_ingest_vps']:,.0f} values/s; query {ours:.1f} vs {theirs:.1f} ms, "
        f"top {result['sqltrack_top_ms']:.1f} vs {result['mlflow_top_ms']:.1f} ms, "
        f"history {result['sqltrack_history_ms']:.1f} vs {result['mlflow_history_ms']:.1f} ms",
        file=sys.stderr,
        flush=True,
    )
    return result


# -- report -----------------------------------------------------------------------------------


def med(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def versions(backends: list[str], pg_url: str) -> str:
    parts = [
        f"MLflow {mlflow.__version__} (SQLAlchemy {sqlalchemy.__version__})",
        f"SQLite {sqlite3.sqlite_version}",
    ]
    if "postgresql" in backends:
        import psycopg

        with psycopg.connect(pg_url) as conn:
            (version,) = conn.execute("SHOW server_version").fetchone()  # type: ignore[misc]
        parts.append(f"PostgreSQL {version} (psycopg {psycopg.__version__})")
    return ", ".join(parts)


def table(backend: str, res: list[dict[str, float]], w: Workload) -> list[str]:
    def us(prefix: str) -> str:
        a, b = med(res, prefix + "_median_us"), med(res, prefix + "_p99_us")
        return f"{a:,.0f} / {b:,.0f}" if a >= 100 else f"{a:.2f} / {b:.2f}"

    top = min(TOP, w.runs)
    top_label = (
        "top ten runs by best val/acc"
        if top == TOP
        else f"top {top} runs by best val/acc (W has only {w.runs} runs, so limit={top})"
    )

    def times(x: float) -> str:
        return f"**{x:,.0f}x**" if x >= 10 else f"**{x:.1f}x**"

    lines = [
        f"#### {BACKENDS[backend]}",
        "",
        "| measure | sqltrack-core | MLflow | sqltrack-core faster by |",
        "|---|---:|---:|---:|",
        "| one call on the training thread, 6-key dict: median / p99 (µs); sqltrack "
        "`run.log(d, step)` vs `mlflow.log_metrics(d, step=)` "
        f"| {us('sqltrack_log')} | {us('mlflow_log')} "
        f"| {times(med(res, 'mlflow_log_median_us') / med(res, 'sqltrack_log_median_us'))} |",
        f"| no-op call, same loop: median / p99 (µs) | {us('noop')} | | |",
        "| ingest of W (values/s): sqltrack `log()` every step + `finish()` vs MLflow "
        f"`log_batch` (≤ {MAX_BATCH:,} metrics a call) + `set_terminated` "
        f"| {med(res, 'sqltrack_ingest_vps'):,.0f} | {med(res, 'batch_ingest_vps'):,.0f} "
        f"| {times(med(res, 'sqltrack_ingest_vps') / med(res, 'batch_ingest_vps'))} |",
        "| ingest of W (values/s): MLflow `mlflow.log_metrics` every step (sqltrack as above) "
        f"| {med(res, 'sqltrack_ingest_vps'):,.0f} | {med(res, 'step_ingest_vps'):,.0f} "
        f"| {times(med(res, 'sqltrack_ingest_vps') / med(res, 'step_ingest_vps'))} |",
        "| ingest wall time (s): sqltrack / MLflow `log_batch` / MLflow per step "
        f"| {med(res, 'sqltrack_ingest_s'):.2f} | {med(res, 'batch_ingest_s'):.2f} / "
        f"{med(res, 'step_ingest_s'):.2f} | |",
        "| best val/acc + last train/loss per run (ms): `tracker.runs(metrics=...)` vs "
        "`mlflow.search_runs` + `get_metric_history` per run "
        f"| {med(res, 'sqltrack_query_ms'):.1f} | {med(res, 'mlflow_query_ms'):.1f} "
        f"| {times(med(res, 'mlflow_query_ms') / med(res, 'sqltrack_query_ms'))} |",
        "| `mlflow.search_runs` alone (last values only, no max) (ms) "
        f"| | {med(res, 'search_ms'):.1f} | |",
        f'| {top_label} (ms): `tracker.runs(metrics={{"val/acc": "max"}}, '
        f'order_by="-val/acc:max", limit={top})` vs `MlflowClient.search_runs` + '
        "`get_metric_history` per run, sorted in Python (MLflow orders by latest values only) "
        f"| {med(res, 'sqltrack_top_ms'):.1f} | {med(res, 'mlflow_top_ms'):.1f} "
        f"| {times(med(res, 'mlflow_top_ms') / med(res, 'sqltrack_top_ms'))} |",
        f"| one run's history, {w.steps:,} steps x {len(KEYS)} keys (ms): "
        "`tracker.metrics(run_id)` vs `MlflowClient.get_metric_history(run_id, key)` per key, "
        "into one row per step "
        f"| {med(res, 'sqltrack_history_ms'):.1f} | {med(res, 'mlflow_history_ms'):.1f} "
        f"| {times(med(res, 'mlflow_history_ms') / med(res, 'sqltrack_history_ms'))} |",
    ]
    return lines


def report(
    w: Workload, args: argparse.Namespace, backends: list[str], res: dict[str, Any], total_s: float
) -> str:
    lines = [
        f"### sqltrack-core vs MLflow: W = {w.runs} runs x {w.steps} steps "
        f"({w.values:,} values), medians of {args.repeat}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}",
        f"- versions: sqltrack-core {sqltrack.__version__} @ {git_revision()}; "
        f"{versions(backends, args.pg_url)}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"script took {total_s:.0f} s",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- per-call figures over {args.log_calls:,} calls; queries over {w.runs} runs "
        f"(the history: run-{w.runs // 2}'s), "
        f"medians of {args.query_repeat} alternated timings; both answers checked equal",
        "- MLflow: database tracking store (`sqlite:///file`, `postgresql+psycopg://`), "
        "synchronous logging (its default), no server; fresh stores for every measurement",
    ]
    for backend in backends:
        lines += ["", *table(backend, res[backend], w)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument("--runs", type=int, help=f"runs in W (default {FULL['runs']})")
    parser.add_argument("--steps", type=int, help=f"steps per run (default {FULL['steps']})")
    parser.add_argument("--val-every", type=int, help=f"default {FULL['val_every']}")
    parser.add_argument(
        "--log-calls", type=int, help=f"timed calls per competitor (default {FULL['log_calls']})"
    )
    parser.add_argument("--repeat", type=int, help=f"default {FULL['repeat']}")
    parser.add_argument("--query-repeat", type=int, help=f"default {FULL['query_repeat']}")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeat < 1 or args.log_calls < 1 or args.runs < 1 or args.query_repeat < 1:
        parser.error("--repeat, --log-calls, --runs and --query-repeat must be at least 1")
    if args.steps < args.val_every:
        parser.error("--steps must be at least --val-every (W needs validation values)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            parser.error(f"unknown backend {b!r}; expected sqlite and/or postgresql")
    started = time.perf_counter()
    w = make_workload(args.runs, args.steps, args.val_every)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sqltrack-bench-mlflow-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in backends:
            stores = MlflowStores(backend, args.pg_url, tmp)
            try:
                results[backend] = [
                    repetition(backend, stores, w, args, tmp, rep) for rep in range(args.repeat)
                ]
            finally:
                stores.close()
    print(report(w, args, backends, results, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
