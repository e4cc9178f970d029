"""Benchmark of the core against the brief's targets, on SQLite and PostgreSQL.

Workload W (the brief's): RUNS runs x STEPS steps, 4 train metrics every step and 2 validation
metrics every 100 steps (200 x 1,000: ~804k values). For each backend it prints, as medians
over ``--repeat`` repetitions, each in a fresh database:

- the cost of one ``run.log()`` of a 6-key dict on the caller's thread (median and p99, timed
  with ``perf_counter_ns`` around each call), with default options (the writer thread writes
  every 5,000 rows, concurrently) and with the writer parked until ``finish()``, next to a
  no-op call in the same loop;
- end-to-end ingest of W in values/s: from the first ``log()`` until every run has finished
  (``finish()`` returns once everything is committed);
- the raw limit in the same repetition: the same rows written into a plain wide table
  (``run_id, step`` + 6 typed columns, primary key ``(run_id, step)``) with binary ``COPY``
  (PostgreSQL, the fastest way in) / ``executemany`` in one transaction (SQLite), and
  ingest / raw;
- readers vs hand-written SQL on the same tables, run through the bare driver (timed
  alternately; medians of ``--query-repeat`` for the first, of ``--extra-repeat`` for the
  others; both sides' answers are checked equal first):
  "best val_acc and last train_loss per run" through ``tracker.runs(metrics=...)``; "top ten
  runs by best val_acc" through ``tracker.runs(metrics={"val/acc": "max"},
  order_by="-val/acc:max", limit=10)`` vs ``ORDER BY ... DESC LIMIT 10``; "one run's history"
  through ``tracker.metrics(run_id)`` vs ``SELECT * FROM metrics WHERE run_id = ? ORDER BY step``;
- the CLI, in-process through click's ``CliRunner`` after a warm-up call (so imports are not
  timed, but each call connects, checks the schema and writes CSV, as ``sqltrack`` does):
  ``sqltrack runs --metric val/acc:max --metric train/loss:last --format csv`` and
  ``sqltrack metrics RUN --format csv``, vs the same hand-written SQL as the readers.

Only the public API is used on the sqltrack side. Runs are logged one after the other in this
process, as a training loop would; ``start_run`` is timed separately (it is not ingest).

Usage::

    python tests/benchmarks/bench_core.py                       # full W, both backends
    python tests/benchmarks/bench_core.py --runs 20 --steps 200 --repeat 1   # smoke check
    python tests/benchmarks/bench_core.py --backends sqlite --pg-url postgresql://...

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DEFAULT_PG_URL, git_revision, with_search_path

import sqltrack_core as sqltrack

TRAIN_KEYS = ("train/loss", "train/acc", "lr", "grad_norm")
VAL_KEYS = ("val/loss", "val/acc")
COLUMNS = ("train_loss", "train_acc", "lr", "grad_norm", "val_loss", "val_acc")

HAND_SQL = (
    "SELECT m.run_id, max(m.val_acc) AS best_val_acc, "
    "(SELECT l.train_loss FROM metrics l WHERE l.run_id = m.run_id "
    "AND l.train_loss IS NOT NULL ORDER BY l.step DESC LIMIT 1) AS last_train_loss "
    "FROM metrics m GROUP BY m.run_id ORDER BY m.run_id"
)
HAND_TOP10_SQL = (
    "SELECT run_id, max(val_acc) AS best_val_acc FROM metrics "
    "GROUP BY run_id ORDER BY best_val_acc DESC LIMIT 10"
)
HAND_HISTORY_SQL = "SELECT * FROM metrics WHERE run_id = {mark} ORDER BY step"
CLI_RUNS_ARGS = (
    "runs",
    "--metric",
    "val/acc:max",
    "--metric",
    "train/loss:last",
    "--format",
    "csv",
)


# -- workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    runs: int
    steps: int
    val_every: int
    # per run: 4 train lists (length steps), then 2 val lists (one value per validation step)
    data: list[tuple[list[float], ...]] = field(default_factory=list)

    @property
    def val_steps(self) -> list[int]:
        return [s for s in range(self.steps) if (s + 1) % self.val_every == 0]

    @property
    def values(self) -> int:
        return self.runs * (self.steps * len(TRAIN_KEYS) + len(self.val_steps) * len(VAL_KEYS))

    def rows(self, first_run_id: int = 1) -> list[tuple[Any, ...]]:
        """The rows of the wide table: (run_id, step, 6 values), None where nothing is logged."""
        out: list[tuple[Any, ...]] = []
        val_index = {s: i for i, s in enumerate(self.val_steps)}
        for r, (tl, ta, lr, gn, vl, va) in enumerate(self.data):
            run_id = first_run_id + r
            for s in range(self.steps):
                v = val_index.get(s)
                out.append(
                    (
                        run_id,
                        s,
                        tl[s],
                        ta[s],
                        lr[s],
                        gn[s],
                        None if v is None else vl[v],
                        None if v is None else va[v],
                    )
                )
        return out


def make_workload(runs: int, steps: int, val_every: int, seed: int = 0) -> Workload:
    """Synthetic but plausible curves, as Python floats (what a training loop logs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = Workload(runs, steps, val_every)
    t = np.arange(steps, dtype=np.float64)
    nval = len(w.val_steps)
    tv = np.asarray(w.val_steps, dtype=np.float64)
    for r in range(runs):
        scale = 200.0 + 20.0 * (r % 17)
        loss = 2.5 * np.exp(-t / scale) + 0.1 + 0.05 * rng.standard_normal(steps)
        acc = 1.0 - 0.9 * np.exp(-t / scale) + 0.02 * rng.standard_normal(steps)
        lr = 3e-4 * np.minimum(1.0, (t + 1) / 100.0) * np.cos(0.5 * np.pi * t / steps)
        gn = np.abs(1.0 + 0.3 * rng.standard_normal(steps))
        vloss = 2.5 * np.exp(-tv / scale) + 0.15 + 0.02 * rng.standard_normal(nval)
        vacc = 1.0 - 0.9 * np.exp(-tv / scale) + 0.01 * rng.standard_normal(nval)
        w.data.append(
            tuple(a.tolist() for a in (loss, acc, lr, gn, vloss, vacc))  # type: ignore[arg-type]
        )
    return w


# -- databases --------------------------------------------------------------------------------


class Database:
    """A fresh, empty database for one measurement: a SQLite file or a PostgreSQL schema."""

    def __init__(self, backend: str, pg_url: str, tmp: Path) -> None:
        self.backend = backend
        self._pg_url = pg_url
        if backend == "sqlite":
            self.path = tmp / f"{uuid.uuid4().hex[:12]}.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
            self._admin(f'CREATE SCHEMA "{self.schema}"')
            self.url = with_search_path(pg_url, self.schema)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self._pg_url, autocommit=True) as conn:
            conn.execute(sql.encode())

    def connect(self) -> Any:
        """A bare driver connection (autocommit) to this database."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        else:
            self._admin(f'DROP SCHEMA "{self.schema}" CASCADE')


@contextmanager
def fresh(backend: str, pg_url: str, tmp: Path) -> Iterator[Database]:
    db = Database(backend, pg_url, tmp)
    try:
        yield db
    finally:
        db.drop()


# -- measurements -----------------------------------------------------------------------------


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


def bench_log_call(db: Database, calls: int) -> dict[str, float]:
    """Per-call cost of run.log() with a 6-key dict, and of a no-op call, in µs."""
    keys = TRAIN_KEYS + VAL_KEYS
    values = [0.5 + 1e-6 * i for i in range(calls)]
    clock = time.perf_counter_ns

    def noop(metrics: Any, step: int | None = None) -> None:
        return None

    def timed(fn: Callable[..., None]) -> list[int]:
        out = [0] * calls
        for i in range(calls):
            v = values[i]
            d = {keys[0]: v, keys[1]: v, keys[2]: v, keys[3]: v, keys[4]: v, keys[5]: v}
            t = clock()
            fn(d, step=i)
            out[i] = clock() - t
        return out

    base = timed(noop)
    result = {
        "noop_median_us": statistics.median(base) / 1000,
        "noop_p99_us": percentile(base, 0.99) / 1000,
    }
    # default options: the writer wakes every max_pending rows and writes while log() runs;
    # parked: nothing is written until finish(), so log() alone is timed
    for label, options in (("log", {}), ("parked", {"flush_interval": 3600, "max_pending": 10**9})):
        tracker = sqltrack.connect(db.url, **options)
        try:
            run = tracker.start_run("bench-log", name=f"log-cost-{label}")
            cost = timed(run.log)
            run.finish()
        finally:
            tracker.close()
        result[f"{label}_median_us"] = statistics.median(cost) / 1000
        result[f"{label}_p99_us"] = percentile(cost, 0.99) / 1000
    return result


def bench_ingest(db: Database, w: Workload) -> tuple[dict[str, float], Any]:
    """Log W through the public API; return timings and the open tracker (for queries)."""
    tracker = sqltrack.connect(db.url)
    t = time.perf_counter()
    runs = [
        tracker.start_run("bench-w", name=f"run-{r}", params={"lr": 3e-4, "seed": r})
        for r in range(w.runs)
    ]
    start_s = time.perf_counter() - t
    val_steps = set(w.val_steps)
    train_loss, train_acc, lr_key, grad_key = TRAIN_KEYS
    val_loss, val_acc = VAL_KEYS
    log_s = finish_s = 0.0
    clock = time.perf_counter
    t0 = clock()
    for run, (tl, ta, lr, gn, vl, va) in zip(runs, w.data, strict=True):
        log = run.log
        a = clock()
        v = 0
        for s in range(w.steps):
            log({train_loss: tl[s], train_acc: ta[s], lr_key: lr[s], grad_key: gn[s]}, step=s)
            if s in val_steps:
                log({val_loss: vl[v], val_acc: va[v]}, step=s)
                v += 1
        b = clock()
        run.finish()
        c = clock()
        log_s += b - a
        finish_s += c - b
    total_s = clock() - t0
    return {
        "ingest_s": total_s,
        "ingest_vps": w.values / total_s,
        "log_loop_s": log_s,
        "finish_s": finish_s,
        "start_run_ms": 1000 * start_s / w.runs,
        "first_run_id": runs[0].id,
    }, tracker


def check_ingest(db: Database, w: Workload) -> None:
    """Everything logged is committed, in the expected columns."""
    conn = db.connect()
    try:
        names = dict(conn.execute("SELECT key, column_name FROM metric_columns").fetchall())
        expected = dict(zip(TRAIN_KEYS + VAL_KEYS, COLUMNS, strict=True))
        assert names == expected, f"unexpected metric columns {names}"
        count, val = conn.execute("SELECT count(*), count(val_acc) FROM metrics").fetchone()
        assert count == w.runs * w.steps, f"{count} rows, expected {w.runs * w.steps}"
        assert val == w.runs * len(w.val_steps), f"{val} val_acc values"
        status = conn.execute("SELECT DISTINCT status FROM runs").fetchall()
        assert [s for (s,) in status] == ["completed"], status
    finally:
        conn.close()


def bench_raw(db: Database, w: Workload) -> dict[str, float]:
    """The same rows into a plain wide table: COPY / executemany, in one transaction, then in
    one transaction per run (the batches ingest writes when runs are logged one by one)."""
    rows = w.rows()
    typed = ", ".join(
        f"{c} {'REAL' if db.backend == 'sqlite' else 'DOUBLE PRECISION'}" for c in COLUMNS
    )
    create = (
        f"CREATE TABLE raw_wide (run_id BIGINT NOT NULL, step BIGINT NOT NULL, {typed}, "
        "PRIMARY KEY (run_id, step))"
    )
    cols = "run_id, step, " + ", ".join(COLUMNS)
    conn = db.connect()
    try:
        conn.execute(create)
        elapsed = _write_raw(db, conn, cols, rows)
        (count,) = conn.execute("SELECT count(*) FROM raw_wide").fetchone()
        assert count == len(rows)
        conn.execute("DELETE FROM raw_wide")
        if db.backend == "postgresql":
            conn.commit()
            conn.execute("VACUUM raw_wide")  # a fresh start for the second figure
        per_run = 0.0
        for start in range(0, len(rows), w.steps):
            per_run += _write_raw(db, conn, cols, rows[start : start + w.steps])
        (count,) = conn.execute("SELECT count(*) FROM raw_wide").fetchone()
        assert count == len(rows)
    finally:
        conn.close()
    return {
        "raw_s": elapsed,
        "raw_vps": w.values / elapsed,
        "raw_per_run_s": per_run,
        "raw_per_run_vps": w.values / per_run,
    }


def _write_raw(db: Database, conn: Any, cols: str, rows: list[tuple[Any, ...]]) -> float:
    """Write `rows` into raw_wide in one transaction; return the seconds it took."""
    if db.backend == "sqlite":
        insert = f"INSERT INTO raw_wide ({cols}) VALUES ({', '.join('?' * (len(COLUMNS) + 2))})"
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - t
    t = time.perf_counter()
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(f"COPY raw_wide ({cols}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["int8", "int8", *["float8"] * len(COLUMNS)])
        for row in rows:
            copy.write_row(row)
    return time.perf_counter() - t


def median_ms_pair(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[float, float]:
    """Median ms of two functions, timed alternately so that both see the same machine load."""
    times: tuple[list[float], list[float]] = ([], [])
    first(), second()  # warm caches and plans
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def same(a: Any, b: Any) -> bool:
    """Two metric values are equal: both missing (None / NaN / empty CSV cell) or close."""
    missing_a = a is None or a == "" or (isinstance(a, float) and math.isnan(a))
    missing_b = b is None or b == "" or (isinstance(b, float) and math.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b
    return math.isclose(float(a), float(b))


def check(ok: bool, what: str, *detail: Any) -> None:
    """Fail loudly (also under python -O) when the two sides of a comparison disagree."""
    if not ok:
        raise SystemExit(
            f"bench_core: {what} differ between sqltrack and hand-written SQL: {detail}"
        )


def check_per_run(label: str, hand: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> None:
    """Rows of (run_id, values...) from both sides are the same, in the same order."""
    check(len(got) == len(hand), f"{label}: row counts", len(got), len(hand))
    for h, g in zip(hand, got, strict=True):
        check(int(g[0]) == h[0], f"{label}: run ids", g[0], h[0])
        check(all(same(x, y) for x, y in zip(g[1:], h[1:], strict=True)), label, g, h)


def check_history(label: str, hand: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    """One run's history, as rows keyed by column name (hand) / metric key (sqltrack)."""
    check(len(got) == len(hand), f"{label}: row counts", len(got), len(hand))
    keys = dict(zip(TRAIN_KEYS + VAL_KEYS, COLUMNS, strict=True))
    for h, g in zip(hand, got, strict=True):
        check(int(g["run_id"]) == h["run_id"] and int(g["step"]) == h["step"], label, g, h)
        for key, column in keys.items():
            check(same(g[key], h[column]), f"{label}: {key}", h["step"], g[key], h[column])


def bench_query(
    db: Database, tracker: Any, repeat: int, extra_repeat: int, run_id: int
) -> dict[str, float]:
    import csv
    import io

    from click.testing import CliRunner

    from sqltrack_core.cli import cli

    spec = {"val/acc": "max", "train/loss": "last"}
    history_sql = HAND_HISTORY_SQL.format(mark="?" if db.backend == "sqlite" else "%s")
    runner = CliRunner()

    def hand() -> list[tuple[Any, ...]]:
        return conn.execute(HAND_SQL).fetchall()

    def top10() -> Any:
        return tracker.runs(metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=10)

    def hand_top10() -> list[tuple[Any, ...]]:
        return conn.execute(HAND_TOP10_SQL).fetchall()

    def hand_history() -> list[tuple[Any, ...]]:
        return conn.execute(history_sql, (run_id,)).fetchall()

    def sqltrack_cli(*args: str) -> list[dict[str, str]]:
        result = runner.invoke(cli, [*args, "--url", db.url], catch_exceptions=False)
        check(result.exit_code == 0, "sqltrack " + " ".join(args), result.output)
        return list(csv.DictReader(io.StringIO(result.stdout)))

    cli_metrics_args = ("metrics", str(run_id), "--format", "csv")
    conn = db.connect()
    try:
        # same answers both ways
        expected = hand()
        df = tracker.runs(metrics=spec)
        got = list(zip(df["id"], df["val/acc:max"], df["train/loss:last"], strict=True))
        check_per_run("runs()", expected, got)
        cli_rows = sqltrack_cli(*CLI_RUNS_ARGS)
        got = [(r["id"], r["val/acc:max"], r["train/loss:last"]) for r in cli_rows]
        check_per_run("sqltrack runs", expected, got)
        df = top10()
        got = list(zip(df["id"], df["val/acc:max"], strict=True))
        check_per_run("top ten runs", hand_top10(), got)
        cursor = conn.execute(history_sql, (run_id,))
        names = [d[0] for d in cursor.description]
        history = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        check(len(history) > 0, "history of run", run_id)
        df = tracker.metrics(run_id)
        check_history("metrics()", history, df.to_dict("records"))
        check_history("sqltrack metrics", history, sqltrack_cli(*cli_metrics_args))

        out: dict[str, float] = {}
        pairs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            ("runs", lambda: tracker.runs(metrics=spec), hand),
            ("top10", top10, hand_top10),
            ("history", lambda: tracker.metrics(run_id), hand_history),
            ("cli_runs", lambda: sqltrack_cli(*CLI_RUNS_ARGS), hand),
            ("cli_metrics", lambda: sqltrack_cli(*cli_metrics_args), hand_history),
        ]
        for name, ours, theirs in pairs:
            ours_ms, hand_ms = median_ms_pair(
                ours, theirs, repeat if name == "runs" else extra_repeat
            )
            out[f"{name}_ms"], out[f"{name}_hand_ms"] = ours_ms, hand_ms
            out[f"{name}_ratio"] = ours_ms / hand_ms
    finally:
        conn.close()
    # the first pair's keys, as before
    out["hand_ms"], out["query_ratio"] = out.pop("runs_hand_ms"), out.pop("runs_ratio")
    return out


def run_backend(
    backend: str, w: Workload, args: argparse.Namespace, tmp: Path
) -> list[dict[str, float]]:
    results = []
    for rep in range(args.repeat):
        result: dict[str, float] = {}
        with fresh(backend, args.pg_url, tmp) as db:
            result.update(bench_log_call(db, args.log_calls))
        with fresh(backend, args.pg_url, tmp) as db:
            ingest, tracker = bench_ingest(db, w)
            try:
                check_ingest(db, w)
                result.update(ingest)
                run_id = int(ingest["first_run_id"]) + w.runs // 2
                result.update(
                    bench_query(db, tracker, args.query_repeat, args.extra_repeat, run_id)
                )
            finally:
                tracker.close()
        with fresh(backend, args.pg_url, tmp) as db:
            result.update(bench_raw(db, w))
        result["ingest_over_raw"] = result["ingest_vps"] / result["raw_vps"]
        # If writing cost exactly the raw limit and could not overlap the caller's log() loop
        # (each run's finish() waits for its rows), ingest / raw could reach at most this.
        result["ceiling"] = result["raw_s"] / (result["log_loop_s"] + result["raw_s"])
        results.append(result)
        print(
            f"  {backend} #{rep + 1}: log {result['log_median_us']:.2f}/{result['log_p99_us']:.2f} µs, "
            f"ingest {result['ingest_vps']:,.0f} v/s ({result['ingest_s']:.2f} s: log loop "
            f"{result['log_loop_s']:.2f} s, finish {result['finish_s']:.2f} s), "
            f"raw {result['raw_vps']:,.0f} v/s, ratio {result['ingest_over_raw']:.0%}, "
            f"runs() {result['runs_ms']:.1f} ms vs SQL {result['hand_ms']:.1f} ms, "
            f"top 10 {result['top10_ratio']:.2f}x, metrics() {result['history_ratio']:.2f}x, "
            f"CLI runs {result['cli_runs_ratio']:.2f}x, metrics {result['cli_metrics_ratio']:.2f}x",
            file=sys.stderr,
            flush=True,
        )
    return results


# -- report -----------------------------------------------------------------------------------


def med(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def server_versions(backends: list[str], pg_url: str) -> str:
    parts = [f"SQLite {sqlite3.sqlite_version}"] if "sqlite" in backends else []
    if "postgresql" in backends:
        import psycopg

        with psycopg.connect(pg_url) as conn:
            (version,) = conn.execute("SHOW server_version").fetchone()  # type: ignore[misc]
        parts.append(f"PostgreSQL {version} (psycopg {psycopg.__version__})")
    return ", ".join(parts)


def report(w: Workload, args: argparse.Namespace, backends: list[str], res: dict[str, Any]) -> str:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    lines = [
        f"### sqltrack-core benchmark: W = {w.runs} runs x {w.steps} steps "
        f"({w.values:,} values), medians of {args.repeat}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; {server_versions(backends, args.pg_url)}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"sqltrack-core {sqltrack.__version__} @ {git_revision()}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        "| measure | " + " | ".join(names[b] for b in backends) + " | target |",
        "|---|" + "---:|" * len(backends) + "---|",
    ]

    def row(label: str, fmt: Callable[[list[dict[str, float]]], str], target: str) -> None:
        lines.append(f"| {label} | " + " | ".join(fmt(res[b]) for b in backends) + f" | {target} |")

    row(
        "`run.log()` 6-key dict, caller thread: median / p99 (µs)",
        lambda r: f"{med(r, 'log_median_us'):.2f} / {med(r, 'log_p99_us'):.2f}",
        "≤ 10 µs",
    )
    row(
        "`run.log()` as above, writer parked until `finish()`: median / p99 (µs)",
        lambda r: f"{med(r, 'parked_median_us'):.2f} / {med(r, 'parked_p99_us'):.2f}",
        "",
    )
    row(
        "no-op call, same loop: median / p99 (µs)",
        lambda r: f"{med(r, 'noop_median_us'):.2f} / {med(r, 'noop_p99_us'):.2f}",
        "baseline",
    )
    row(
        "ingest of W, first log → all runs finished (values/s)",
        lambda r: f"{med(r, 'ingest_vps'):,.0f}",
        "≥ 50% of raw",
    )
    row(
        "raw limit: wide table, "
        + " / ".join(
            {"sqlite": "executemany, 1 tx", "postgresql": "binary COPY, 1 tx"}[b] for b in backends
        )
        + " (values/s)",
        lambda r: f"{med(r, 'raw_vps'):,.0f}",
        "",
    )
    row("ingest / raw", lambda r: f"**{med(r, 'ingest_over_raw'):.0%}**", "≥ 50%")
    row(
        "ceiling of ingest / raw: raw / (caller's `log()` loop + raw)",
        lambda r: f"{med(r, 'ceiling'):.0%}",
        "",
    )
    row(
        f"raw limit, one transaction per run ({w.steps:,} rows each) (values/s)",
        lambda r: f"{med(r, 'raw_per_run_vps'):,.0f}",
        "",
    )
    row(
        "ingest / raw per run",
        lambda r: f"{med(r, 'ingest_vps') / med(r, 'raw_per_run_vps'):.0%}",
        "",
    )
    row(
        '`tracker.runs(metrics={"val/acc": "max", "train/loss": "last"})` (ms)',
        lambda r: f"{med(r, 'runs_ms'):.1f}",
        "",
    )
    row("hand-written SQL, bare driver (ms)", lambda r: f"{med(r, 'hand_ms'):.1f}", "")
    row("runs() / SQL", lambda r: f"**{med(r, 'query_ratio'):.2f}x**", "≤ 2x")
    readers = [
        (
            "top10",
            '`tracker.runs(metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=10)` (ms)',
            "hand-written SQL, `ORDER BY ... DESC LIMIT 10` (ms)",
            "top ten / SQL",
        ),
        (
            "history",
            f"`tracker.metrics(run_id)`, one run's history ({w.steps:,} rows) (ms)",
            "hand-written `SELECT * FROM metrics WHERE run_id = ? ORDER BY step`, fetchall (ms)",
            "metrics() / SQL",
        ),
    ]
    for key, label, hand_label, ratio_label in readers:
        row(label, lambda r, k=key: f"{med(r, k + '_ms'):.1f}", "")
        row(hand_label, lambda r, k=key: f"{med(r, k + '_hand_ms'):.1f}", "")
        row(ratio_label, lambda r, k=key: f"**{med(r, k + '_ratio'):.2f}x**", "≤ 2x")
    for key, label in (
        ("cli_runs", "`sqltrack " + " ".join(CLI_RUNS_ARGS) + "`"),
        ("cli_metrics", "`sqltrack metrics RUN --format csv`"),
    ):
        row(
            f"{label}, in-process (`CliRunner`, after a warm-up call): ms (/ same SQL)",
            lambda r, k=key: f"{med(r, k + '_ms'):.1f} ({med(r, k + '_ratio'):.1f}x)",
            "",
        )
    lines += [
        "",
        "Where ingest time goes (medians, seconds unless noted):",
        "",
        "| part | " + " | ".join(names[b] for b in backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    row2 = [
        ("ingest wall time", "ingest_s", "{:.2f}"),
        ("  of which caller's log() loop", "log_loop_s", "{:.2f}"),
        ("  of which `finish()` (final flush + status)", "finish_s", "{:.2f}"),
        ("raw wall time", "raw_s", "{:.2f}"),
        ("raw wall time, one transaction per run", "raw_per_run_s", "{:.2f}"),
        ("`start_run()` per run, outside ingest (ms)", "start_run_ms", "{:.1f}"),
    ]
    for label, key, fmt in row2:
        lines.append(
            f"| {label} | " + " | ".join(fmt.format(med(res[b], key)) for b in backends) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--log-calls", type=int, default=None, help="timed log() calls (default min(100k, W's))"
    )
    parser.add_argument("--query-repeat", type=int, default=15)
    parser.add_argument(
        "--extra-repeat",
        type=int,
        default=4,
        help="timed calls for the top-ten, history and CLI rows (fewer: they add to the runtime)",
    )
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {b!r}; expected sqlite and/or postgresql")
    if args.log_calls is None:
        args.log_calls = min(100_000, args.runs * args.steps)
    w = make_workload(args.runs, args.steps, args.val_every)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sqltrack-bench-") as tmp:
        for backend in backends:
            results[backend] = run_backend(backend, w, args, Path(tmp))
    print(report(w, args, backends, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
