"""Benchmark of reading a long history: `sqltrack metrics --tail`, and a table against CSV.

One run of ``--steps`` steps (100,000) is logged through the public API: 4 train metrics at
every step and 2 validation metrics every 100 steps. SQLite by default; with ``--pg-url`` the
same again on PostgreSQL (a schema of its own, dropped afterwards). Each figure is a median of
``--repeat``; the two sides of a comparison are timed alternately, after a warm-up call.

- ``sqltrack metrics RUN --tail 20 --format csv``, in-process through click's ``CliRunner``
  (so imports are not timed, but each call connects, checks the schema, reads and writes CSV
  as the command does), against bare SQL doing the same: a new driver connection,
  ``ORDER BY step DESC LIMIT 20`` and Python's ``csv`` module; the same tail as a table; the
  API call ``tracker.metrics(run, tail=20)``; and, for what a user waits for, the command as
  a subprocess (``python -m sqltrack_core``) next to a bare ``python -c pass``;
- the whole history as a table (``--all``) against its CSV (``--format csv``), both
  in-process, and their ratio (the target: a table at most 2x its CSV); bare SQL writing all
  rows with ``csv``; and, where ``rich`` is installed, what a ``rich.table.Table`` (the
  renderer of the CLI before issue 15) costs for the first ``--rich-rows`` rows, extrapolated
  to the whole history.

Both sides' answers are checked equal first (steps and values of the tail).

Usage::

    python tests/benchmarks/bench_cli.py                     # 100,000 steps, SQLite
    python tests/benchmarks/bench_cli.py --pg-url postgresql://postgres@127.0.0.1:5432/test
    python tests/benchmarks/bench_cli.py --steps 10000 --repeat 1 --rich-rows 200   # quick

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import bench_schema, git_revision, pg_admin, with_search_path

import sqltrack_core as sqltrack

TRAIN_KEYS = ("train/loss", "train/acc", "lr", "grad_norm")
VAL_KEYS = ("val/loss", "val/acc")
TAIL = 20
TAIL_SQL = (
    "SELECT * FROM (SELECT * FROM metrics WHERE run_id = {mark} ORDER BY step DESC LIMIT {mark})"
    " AS t ORDER BY step"
)
ALL_SQL = "SELECT * FROM metrics WHERE run_id = {mark} ORDER BY step"


def log_history(url: str, steps: int) -> int:
    """Log the benchmark's run through the public API; its id."""
    with sqltrack.connect(url) as tracker:
        with tracker.start_run("bench-cli", name=f"{steps}-steps") as run:
            for step in range(steps):
                row = {
                    "train/loss": 2.0 / (1 + step / 1000),
                    "train/acc": step / steps,
                    "lr": 3e-4 * math.cos(step / steps),
                    "grad_norm": 1.0 + math.sin(step),
                }
                if step % 100 == 99:
                    row.update({"val/loss": 1.5 / (1 + step / 1000), "val/acc": step / steps})
                run.log(row, step=step)
        assert run.id is not None
        return run.id


class Target:
    """One database: its URL for sqltrack, and a bare driver connection for the SQL side."""

    def __init__(self, backend: str, url: str, path: Path | None = None) -> None:
        self.backend, self.url, self.path = backend, url, path
        self.mark = "?" if backend == "sqlite" else "%s"

    def connect(self) -> Any:
        if self.path is not None:
            return sqlite3.connect(self.path)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def bare_csv(self, sql: str, params: tuple[Any, ...]) -> str:
        """Connect, run `sql`, write its rows with Python's csv module: what a script would do."""
        conn = self.connect()
        try:
            cursor = conn.execute(sql.format(mark=self.mark), params)
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow([d[0] for d in cursor.description])
            writer.writerows(cursor.fetchall())
            return out.getvalue()
        finally:
            conn.close()


def median_pair(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[float, float]:
    """Median seconds of two functions, timed alternately after a warm-up call of each."""
    times: tuple[list[float], list[float]] = ([], [])
    first(), second()
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def check(ok: bool, what: str, *detail: Any) -> None:
    if not ok:
        raise SystemExit(f"bench_cli: {what} differ between sqltrack and bare SQL: {detail}")


def cli_runner() -> Callable[..., str]:
    """``sqltrack ARGS`` in-process; its stdout. $COLUMNS is unset: output is not a terminal,
    as when piped."""
    from click.testing import CliRunner

    from sqltrack_core.cli import cli

    runner = CliRunner(env={"COLUMNS": None})

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        if result.exit_code != 0:
            raise SystemExit(f"bench_cli: sqltrack {' '.join(args)} failed: {result.output}")
        return result.stdout

    return invoke


def check_tail(target: Target, cli_csv: str, bare: str) -> None:
    """The tail from the CLI and from bare SQL: the same steps and values."""
    ours, theirs = (list(csv.DictReader(io.StringIO(text))) for text in (cli_csv, bare))
    check([r["step"] for r in ours] == [r["step"] for r in theirs], "tail steps", len(ours))
    columns = dict(
        zip(
            (*TRAIN_KEYS, *VAL_KEYS),
            ("train_loss", "train_acc", "lr", "grad_norm", "val_loss", "val_acc"),
            strict=True,
        )
    )
    for mine, bare_row in zip(ours, theirs, strict=True):
        for key, column in columns.items():
            a, b = mine[key], bare_row[column]
            check(
                (a == "") == (b == "") and (a == "" or math.isclose(float(a), float(b))), key, a, b
            )


def rich_seconds(df: Any, rows: int) -> float | None:
    """Seconds a rich Table (as the CLI drew tables before issue 15) takes for `rows` rows."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return None
    part = df.head(rows)
    start = time.perf_counter()
    table = Table(header_style="bold")
    for column in part.columns:
        table.add_column(str(column), justify="right", overflow="fold")
    for row in part.itertuples(index=False):
        table.add_row(
            *("" if v != v else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)
        )
    Console(file=io.StringIO(), width=200).print(table)
    return time.perf_counter() - start


def measure(target: Target, run_id: int, args: argparse.Namespace) -> dict[str, float | None]:
    invoke = cli_runner()
    run = str(run_id)
    url = ("--url", target.url)
    tail_csv = lambda: invoke("metrics", run, *url, "--tail", str(TAIL), "--format", "csv")  # noqa: E731
    bare_tail = lambda: target.bare_csv(TAIL_SQL, (run_id, TAIL))  # noqa: E731
    check_tail(target, tail_csv(), bare_tail())
    out: dict[str, float | None] = {}
    out["tail_csv"], out["bare_tail"] = median_pair(tail_csv, bare_tail, args.repeat)
    tail_table = lambda: invoke("metrics", run, *url, "--tail", str(TAIL))  # noqa: E731
    with sqltrack.connect(target.url) as tracker:
        api = lambda: tracker.metrics(run_id, tail=TAIL)  # noqa: E731
        out["tail_table"], out["api_tail"] = median_pair(tail_table, api, args.repeat)
        history = tracker.metrics(run_id).drop(columns=["logged_at"])
    command = [sys.executable, "-m", "sqltrack_core", "metrics", run, *url, "--tail", str(TAIL)]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out["tail_process"], out["python"] = median_pair(
        lambda: subprocess.run(
            [*command, "--format", "csv"], check=True, capture_output=True, env=env
        ),
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True),
        args.repeat,
    )
    all_csv = lambda: invoke("metrics", run, *url, "--format", "csv")  # noqa: E731
    all_table = lambda: invoke("metrics", run, *url, "--all")  # noqa: E731
    rows = sum(line.startswith("│") for line in all_table().splitlines())
    check(rows == args.steps, "table rows", rows, args.steps)
    out["table"], out["csv"] = median_pair(all_table, all_csv, args.repeat)
    out["bare_all"] = statistics.median(
        timed(lambda: target.bare_csv(ALL_SQL, (run_id,))) for _ in range(args.repeat)
    )
    rich = rich_seconds(history, args.rich_rows)
    out["rich_all"] = None if rich is None else rich * args.steps / min(args.rich_rows, args.steps)
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(
    args: argparse.Namespace, results: dict[str, dict[str, float | None]], notes: list[str]
) -> str:
    names = list(results)
    lines = [
        f"### `sqltrack metrics` on a {args.steps:,}-step run, medians of {args.repeat}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; {'; '.join(notes)}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"sqltrack-core {sqltrack.__version__} @ {git_revision()}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "- in-process: click's `CliRunner` after a warm-up call (each call connects, checks the "
        "schema, reads, prints); bare SQL: a new driver connection, the query, Python's `csv`",
        "",
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def row(label: str, value: Callable[[dict[str, float | None]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(value(results[n]) for n in names) + " |")

    def ms(key: str) -> Callable[[dict[str, float | None]], str]:
        return lambda r: "n/a" if r[key] is None else f"{1000 * r[key]:.1f} ms"  # type: ignore[operator]

    def s(key: str) -> Callable[[dict[str, float | None]], str]:
        return lambda r: "n/a" if r[key] is None else f"{r[key]:.2f} s"

    def ratio(a: str, b: str) -> Callable[[dict[str, float | None]], str]:
        return lambda r: f"{r[a] / r[b]:.2f}x"  # type: ignore[operator]

    row(f"`metrics RUN --tail {TAIL} --format csv`, in-process", ms("tail_csv"))
    row(f"bare SQL (`ORDER BY step DESC LIMIT {TAIL}`) + `csv`", ms("bare_tail"))
    row("  ratio, sqltrack / bare SQL", ratio("tail_csv", "bare_tail"))
    row(f"`metrics RUN --tail {TAIL}` (table), in-process", ms("tail_table"))
    row(f"`tracker.metrics(run, tail={TAIL})`", ms("api_tail"))
    row(
        f"`python -m sqltrack_core metrics RUN --tail {TAIL} --format csv`, subprocess",
        ms("tail_process"),
    )
    row("  `python -c pass`, subprocess (interpreter start)", ms("python"))
    row(f"`metrics RUN --format csv`, {args.steps:,} rows, in-process", s("csv"))
    row(f"`metrics RUN --all` (table), {args.steps:,} rows, in-process", s("table"))
    row("  ratio, table / CSV (target: at most 2x)", ratio("table", "csv"))
    row(f"bare SQL + `csv`, {args.steps:,} rows", s("bare_all"))
    row(
        f"rich `Table` (before issue 15): first {min(args.rich_rows, args.steps):,} rows, "
        "extrapolated",
        s("rich_all"),
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--pg-url", default=None, help="also measure PostgreSQL at this URL (default: SQLite only)"
    )
    parser.add_argument(
        "--rich-rows", type=int, default=2000, help="rows drawn with rich, for its per-row cost"
    )
    args = parser.parse_args(argv)
    if args.steps < 2 * TAIL or args.repeat < 1:
        parser.error(f"--steps must be at least {2 * TAIL} and --repeat at least 1")
    results: dict[str, dict[str, float | None]] = {}
    notes = [f"SQLite {sqlite3.sqlite_version}"]
    with tempfile.TemporaryDirectory(prefix="sqltrack-bench-cli-") as tmp:
        path = Path(tmp) / "bench.db"
        target = Target("sqlite", f"sqlite:///{path}", path)
        results["SQLite"] = measure(target, log_history(target.url, args.steps), args)
    if args.pg_url:
        schema, note = bench_schema(args.pg_url, "bench_cli", require=False)
        notes.append(note)
        if schema is not None:
            try:
                target = Target("postgresql", with_search_path(args.pg_url, schema))
                results["PostgreSQL"] = measure(target, log_history(target.url, args.steps), args)
            finally:
                pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
    print(report(args, results, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
