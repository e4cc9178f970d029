"""How the readers' time and the table's size grow with the number of rows, on PostgreSQL.

For each scale factor k in ``--scales`` (default 1, 10, 100) a fresh PostgreSQL schema holds
the real sqltrack schema and k x W: W is the brief's workload (``--runs`` 200 runs x ``--steps``
1,000 steps, 4 train metrics every step and 2 validation metrics every ``--val-every`` 100
steps: 200,000 rows, ~804k values), so 100 x W is 20,000 runs and 20M rows. It prints, per scale:

- rows, runs, and the size of ``metrics`` (``pg_total_relation_size``, split into the table,
  with its TOAST and maps, and its indexes), after ``VACUUM ANALYZE``;
- three readers against the hand-written SQL of ``bench_core.py``, through the bare driver,
  timed alternately (medians of ``--repeat``, after one warm-up call each; both answers checked
  equal first): "best val_acc and last train_loss per run" (``tracker.runs(metrics=...)``;
  again for the runs of one experiment, ``tracker.runs(experiment, metrics=...)``),
  "top ten runs by best val_acc" (``tracker.runs`` sorted and cut in pandas, or with
  ``order_by``/``limit`` where ``tracker.runs`` takes them, vs ``ORDER BY ... LIMIT 10``) and
  "one run's history" (``tracker.metrics(run_id)`` vs ``SELECT * FROM metrics WHERE run_id =
  %s ORDER BY step``), with each figure's growth over the previous scale.

How the data gets there (logging 100 x W's 80M values through the client would take tens of
minutes more, mostly in this process):

- the schema is made by ``sqltrack_core.connect(url)``; W's 200 runs are made through the
  public API (``tracker.start_run(...)``, then ``finish()``), and one row of the six metrics is
  logged through it so that the writer makes and registers the six columns (the row is then
  deleted);
- the other (k - 1) x 200 runs are copies of those rows made in SQL, with fresh UUIDs, names
  and seeds (through the API a run costs ~16 ms, mostly ``git`` for the run's environment:
  over 5 minutes at 100 x W);
- ``metrics`` is filled server-side, ``INSERT ... SELECT`` from ``generate_series``, run after
  run (rows in the order one training loop after the other writes them), in chunks of
  ``--chunk-runs`` runs: decaying losses and rising accuracies with noise, a warm-up and cosine
  learning rate, validation values every ``--val-every`` steps and NULL elsewhere;
  ``setseed`` makes it repeatable.

Each schema is dropped after its scale (also on errors and Ctrl-C), unless ``--keep``. 100 x W
needs about 2 GB of disk while it runs.

Usage::

    python tests/benchmarks/bench_scale.py                      # 1, 10 and 100 x W
    python tests/benchmarks/bench_scale.py --scales 1,10 --repeat 3
    python tests/benchmarks/bench_scale.py --scales 1 --repeat 1   # smoke check

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _common import DEFAULT_PG_URL, git_revision, pg_admin, pg_version, with_search_path
from bench_core import (
    COLUMNS,
    HAND_HISTORY_SQL,
    HAND_SQL,
    HAND_TOP10_SQL,
    TRAIN_KEYS,
    VAL_KEYS,
    check,
    check_history,
    check_per_run,
    median_ms_pair,
)

import sqltrack_core as sqltrack

EXPERIMENT = "bench-scale"
SUMMARY = {"val/acc": "max", "train/loss": "last"}
# HAND_SQL for the runs of one experiment, as `tracker.runs(experiment, ...)` selects them
HAND_EXPERIMENT_SQL = (
    "SELECT m.run_id, max(m.val_acc) AS best_val_acc, "
    "(SELECT l.train_loss FROM metrics l WHERE l.run_id = m.run_id "
    "AND l.train_loss IS NOT NULL ORDER BY l.step DESC LIMIT 1) AS last_train_loss "
    "FROM metrics m WHERE m.run_id IN (SELECT r.id FROM runs r JOIN experiments e "
    "ON e.id = r.experiment_id WHERE e.name = %s) GROUP BY m.run_id ORDER BY m.run_id"
)
TOP = {"val/acc": "max"}
TOP_COLUMN = "val/acc:max"
SETTINGS = ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")

# W's runs again as copies: fresh UUIDs, names and seeds, the rest (env, params, times) as made
# by the API. Copy k of run i is named run-{k * base + i}, as if the API had made them in turn.
CLONE_RUNS_SQL = """
INSERT INTO runs (uuid, experiment_id, name, status, created_at, started_at, ended_at,
                  heartbeat_at, params, env, tags, comment, owner)
SELECT gen_random_uuid(), r.experiment_id, 'run-' || (k * %(base)s + r.i), r.status,
       r.created_at, r.started_at, r.ended_at, r.heartbeat_at,
       jsonb_set(r.params, '{seed}', to_jsonb(k * %(base)s + r.i)), r.env, r.tags, r.comment,
       r.owner
FROM generate_series(1, %(copies)s) AS k,
     (SELECT *, row_number() OVER (ORDER BY id) - 1 AS i FROM runs) AS r
ORDER BY k, r.i
"""

# The rows of runs first_id..last_id: one run after the other, step by step (generate_series
# takes the run's own steps, so the join is LATERAL and keeps the runs outer, in id order).
# The curves follow make_workload() in bench_core.py; noise is a sum of three uniforms, scaled
# to unit variance.
FILL_SQL = """
INSERT INTO metrics (run_id, step, logged_at, train_loss, train_acc, lr, grad_norm,
                     val_loss, val_acc)
SELECT r.id, s.step, r.started_at + s.step * interval '100 milliseconds',
       2.5 * exp(-s.step / r.tau) + 0.1 + 0.05 * (random() + random() + random() - 1.5) * 2,
       1.0 - 0.9 * exp(-s.step / r.tau) + 0.02 * (random() + random() + random() - 1.5) * 2,
       3e-4 * least(1.0, (s.step + 1) / 100.0) * cos(0.5 * pi() * s.step / %(steps)s),
       abs(1.0 + 0.3 * (random() + random() + random() - 1.5) * 2),
       CASE WHEN (s.step + 1) %% %(val_every)s = 0 THEN 2.5 * exp(-s.step / r.tau) + 0.15
            + 0.02 * (random() + random() + random() - 1.5) * 2 END,
       CASE WHEN (s.step + 1) %% %(val_every)s = 0 THEN 1.0 - 0.9 * exp(-s.step / r.tau)
            + 0.01 * (random() + random() + random() - 1.5) * 2 END
FROM (SELECT id, started_at, %(steps)s AS steps,
             200.0 + 20.0 * ((row_number() OVER (ORDER BY id) - 1) %% 17) AS tau
      FROM runs ORDER BY id) AS r,
     LATERAL generate_series(0, r.steps - 1) AS s(step)
WHERE r.id BETWEEN %(first_id)s AND %(last_id)s
"""

SIZE_SQL = (
    "SELECT pg_total_relation_size('metrics'), pg_table_size('metrics'), "
    "pg_indexes_size('metrics'), (SELECT count(*) FROM metrics), "
    "(SELECT count(val_acc) FROM metrics), (SELECT count(*) FROM runs)"
)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fail(message: str) -> None:
    """Stop (also under python -O) when the data is not what was asked for."""
    raise SystemExit(f"bench_scale: {message}")


def val_steps(args: argparse.Namespace) -> int:
    """Validation steps per run: every --val-every steps, as make_workload() in bench_core.py."""
    return sum(1 for s in range(args.steps) if (s + 1) % args.val_every == 0)


def values_per_run(args: argparse.Namespace) -> int:
    return args.steps * len(TRAIN_KEYS) + val_steps(args) * len(VAL_KEYS)


# -- one scale's data -------------------------------------------------------------------------


def make_runs(url: str, args: argparse.Namespace) -> float:
    """W's runs through the public API, the six columns registered; returns the seconds taken."""
    t = time.perf_counter()
    tracker = sqltrack.connect(url)
    try:
        for r in range(args.runs):
            run = tracker.start_run(EXPERIMENT, name=f"run-{r}", params={"lr": 3e-4, "seed": r})
            if r == 0:  # the writer makes the columns, as for any first log
                run.log(dict.fromkeys(TRAIN_KEYS + VAL_KEYS, 0.5), step=0)
            run.finish()
    finally:
        tracker.close()
    return time.perf_counter() - t


def fill(conn: psycopg.Connection[Any], scale: int, args: argparse.Namespace) -> dict[str, float]:
    """Copies of W's runs, then the metric rows of every run, then VACUUM ANALYZE."""
    names = dict(conn.execute("SELECT key, column_name FROM metric_columns").fetchall())
    expected = dict(zip(TRAIN_KEYS + VAL_KEYS, COLUMNS, strict=True))
    if names != expected:
        fail(f"the API registered the metric columns {names}, expected {expected}")
    conn.execute("DELETE FROM metrics")  # the row that made the columns
    t = time.perf_counter()
    if scale > 1:
        conn.execute(CLONE_RUNS_SQL, {"base": args.runs, "copies": scale - 1})
    clone_s = time.perf_counter() - t
    (first_id, last_id), *_ = conn.execute("SELECT min(id), max(id) FROM runs").fetchall()
    conn.execute("SELECT setseed(%s)", (args.seed,))
    t = time.perf_counter()
    for lo in range(first_id, last_id + 1, args.chunk_runs):
        hi = min(lo + args.chunk_runs - 1, last_id)
        conn.execute(
            FILL_SQL,
            {
                "steps": args.steps,
                "val_every": args.val_every,
                "first_id": lo,
                "last_id": hi,
            },
        )
        done = (hi - first_id + 1) * args.steps
        progress(f"    {done:,} rows, {time.perf_counter() - t:.0f} s")
    fill_s = time.perf_counter() - t
    t = time.perf_counter()
    # as autovacuum would by now; it never analyzes experiments (one row: under its threshold
    # of 50 changes), so neither does this
    conn.execute("VACUUM ANALYZE metrics")
    conn.execute("VACUUM ANALYZE runs")
    return {"clone_s": clone_s, "fill_s": fill_s, "vacuum_s": time.perf_counter() - t}


def sizes(conn: psycopg.Connection[Any], scale: int, args: argparse.Namespace) -> dict[str, float]:
    row = conn.execute(SIZE_SQL).fetchone()
    assert row is not None
    total, table, indexes, rows, val_rows, runs = row
    runs_expected = scale * args.runs
    val_expected = runs_expected * val_steps(args)
    expected = (runs_expected, runs_expected * args.steps, val_expected)
    if (runs, rows, val_rows) != expected:
        fail(f"(runs, rows, val_acc values) are {(runs, rows, val_rows)}, expected {expected}")
    return {
        "total_bytes": total,
        "table_bytes": table,
        "index_bytes": indexes,
        "rows": rows,
        "runs": runs,
        "values": runs * values_per_run(args),
    }


# -- the readers ------------------------------------------------------------------------------

# Where tracker.runs takes order_by/limit, the top ten are asked for in SQL, else cut in pandas.
RUNS_TAKES_LIMIT = "limit" in inspect.signature(sqltrack.Tracker.runs).parameters


def top_ten(tracker: Any) -> Any:
    """The ten runs with the best val/acc, best first."""
    if RUNS_TAKES_LIMIT:
        return tracker.runs(metrics=TOP, order_by=f"-{TOP_COLUMN}", limit=10)  # - : descending
    return tracker.runs(metrics=TOP).sort_values(TOP_COLUMN, ascending=False).head(10)


TOP_LABEL = (
    '`tracker.runs(metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=10)`'
    if RUNS_TAKES_LIMIT
    else '`tracker.runs(metrics={"val/acc": "max"})`, sorted + `head(10)` in pandas'
)


def bench_readers(url: str, run_id: int, repeat: int) -> dict[str, float]:
    tracker = sqltrack.connect(url)
    conn = psycopg.connect(url, autocommit=True)
    history_sql = HAND_HISTORY_SQL.format(mark="%s")
    try:

        def hand() -> list[tuple[Any, ...]]:
            return conn.execute(HAND_SQL).fetchall()

        def hand_experiment() -> list[tuple[Any, ...]]:
            return conn.execute(HAND_EXPERIMENT_SQL, (EXPERIMENT,)).fetchall()

        def hand_top10() -> list[tuple[Any, ...]]:
            return conn.execute(HAND_TOP10_SQL).fetchall()

        def hand_history() -> list[tuple[Any, ...]]:
            return conn.execute(history_sql, (run_id,)).fetchall()

        # same answers both ways
        df = tracker.runs(metrics=SUMMARY)
        got = list(zip(df["id"], df["val/acc:max"], df["train/loss:last"], strict=True))
        check_per_run("runs()", hand(), got)
        df = tracker.runs(EXPERIMENT, metrics=SUMMARY)
        got = list(zip(df["id"], df["val/acc:max"], df["train/loss:last"], strict=True))
        check_per_run("runs(experiment)", hand_experiment(), got)
        df = top_ten(tracker)
        check_per_run(
            "top ten runs", hand_top10(), list(zip(df["id"], df[TOP_COLUMN], strict=True))
        )
        cursor = conn.execute(history_sql, (run_id,))
        names = [d[0] for d in cursor.description or ()]
        history = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        check(len(history) > 0, "history of run", run_id)
        check_history("metrics()", history, tracker.metrics(run_id).to_dict("records"))

        out: dict[str, float] = {}
        pairs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            ("runs", lambda: tracker.runs(metrics=SUMMARY), hand),
            ("experiment", lambda: tracker.runs(EXPERIMENT, metrics=SUMMARY), hand_experiment),
            ("top10", lambda: top_ten(tracker), hand_top10),
            ("history", lambda: tracker.metrics(run_id), hand_history),
        ]
        for name, ours, theirs in pairs:
            out[f"{name}_ms"], out[f"{name}_hand_ms"] = median_ms_pair(ours, theirs, repeat)
            out[f"{name}_ratio"] = out[f"{name}_ms"] / out[f"{name}_hand_ms"]
    finally:
        conn.close()
        tracker.close()
    return out


def bench_scale(scale: int, args: argparse.Namespace) -> dict[str, float]:
    schema = f"bench_scale_{uuid.uuid4().hex[:12]}"
    url = with_search_path(args.pg_url, schema)
    pg_admin(args.pg_url, f'CREATE SCHEMA "{schema}"')
    try:
        progress(f"  {scale} x W: {scale * args.runs:,} runs in schema {schema}")
        result: dict[str, float] = {"scale": scale, "api_runs_s": make_runs(url, args)}
        with psycopg.connect(url, autocommit=True) as conn:
            result.update(fill(conn, scale, args))
            result.update(sizes(conn, scale, args))
            (first_id,), *_ = conn.execute("SELECT min(id) FROM runs").fetchall()
        progress(
            f"    filled in {result['fill_s']:.0f} s (VACUUM ANALYZE {result['vacuum_s']:.0f} s): "
            f"{result['total_bytes'] / 1e6:,.1f} MB"
        )
        # a run in the middle of the table
        result.update(bench_readers(url, first_id + int(result["runs"]) // 2, args.repeat))
        progress(
            f"    runs() {result['runs_ms']:.1f} ms vs SQL {result['runs_hand_ms']:.1f} ms, "
            f"of one experiment {result['experiment_ms']:.1f} vs "
            f"{result['experiment_hand_ms']:.1f} ms, "
            f"top ten {result['top10_ms']:.1f} vs {result['top10_hand_ms']:.1f} ms, "
            f"metrics() {result['history_ms']:.1f} vs {result['history_hand_ms']:.1f} ms"
        )
    finally:
        if args.keep:
            progress(f'    kept; drop it with: DROP SCHEMA "{schema}" CASCADE')
        else:
            pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
    return result


# -- report -----------------------------------------------------------------------------------


def settings(pg_url: str) -> str:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(SETTINGS),),
        ).fetchall()
    return ", ".join(f"{name} {value}" for name, value in rows)


def report(
    args: argparse.Namespace, scales: list[int], res: dict[int, dict[str, float]], total_s: float
) -> str:
    lines = [
        f"### sqltrack-core at scale: k x W, W = {args.runs} runs x {args.steps} steps "
        f"({args.runs * values_per_run(args):,} values), PostgreSQL, medians of {args.repeat}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; {pg_version(args.pg_url)}; {settings(args.pg_url)}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"sqltrack-core {sqltrack.__version__} @ {args.revision}; script took {total_s:.0f} s",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- data: {args.runs} runs through the API, the others copies made in SQL; rows "
        "generated server-side, run after run; `VACUUM ANALYZE` before timing",
        "- queries: through the bare driver, timed alternately after a warm-up call each; "
        "both answers checked equal; (x N) is the growth over the previous scale",
        "",
        "| measure | " + " | ".join(f"{k} x W" for k in scales) + " |",
        "|---|" + "---:|" * len(scales),
    ]

    def row(label: str, fmt: Callable[[dict[str, float]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(fmt(res[k]) for k in scales) + " |")

    previous = dict(zip(scales[1:], scales, strict=False))

    def grown(key: str, unit: float = 1.0) -> Callable[[dict[str, float]], str]:
        """The figure (in `unit`s), then its growth over the previous scale."""

        def fmt(r: dict[str, float]) -> str:
            text = f"{r[key] / unit:,.1f}"
            before = previous.get(int(r["scale"]))
            if before is not None:
                text += f" (x {r[key] / res[before][key]:.1f})"
            return text

        return fmt

    row("rows in `metrics`", lambda r: f"{r['rows']:,.0f}")
    row("runs", lambda r: f"{r['runs']:,.0f}")
    row("values", lambda r: f"{r['values']:,.0f}")
    mb = 1e6
    row("`metrics` total size, `pg_total_relation_size` (MB)", grown("total_bytes", mb))
    row("  of which table (heap, TOAST, maps) (MB)", grown("table_bytes", mb))
    row("  of which indexes (primary key `(run_id, step)`) (MB)", grown("index_bytes", mb))
    row(
        "bytes per row / per value",
        lambda r: f"{r['total_bytes'] / r['rows']:.0f} / {r['total_bytes'] / r['values']:.1f}",
    )
    queries = [
        (
            "runs",
            '`tracker.runs(metrics={"val/acc": "max", "train/loss": "last"})`',
            "hand-written SQL (`GROUP BY run_id`, last value by subquery)",
            "runs() / SQL",
        ),
        (
            "experiment",
            f'the same for one experiment (all runs): `tracker.runs("{EXPERIMENT}", metrics=...)`',
            "hand-written SQL, `WHERE run_id IN (SELECT ... WHERE e.name = %s)`",
            "runs(experiment) / SQL",
        ),
        ("top10", TOP_LABEL, "hand-written SQL, `ORDER BY ... DESC LIMIT 10`", "top ten / SQL"),
        (
            "history",
            f"`tracker.metrics(run_id)`, one run's history ({args.steps:,} rows)",
            "hand-written `SELECT * FROM metrics WHERE run_id = %s ORDER BY step`",
            "metrics() / SQL",
        ),
    ]
    for key, label, hand_label, ratio_label in queries:
        row(f"{label} (ms)", grown(f"{key}_ms"))
        row(f"{hand_label} (ms)", grown(f"{key}_hand_ms"))
        row(ratio_label, lambda r, k=key: f"**{r[k + '_ratio']:.2f}x**")
    lines += [
        "",
        "Making the data (seconds):",
        "",
        "| step | " + " | ".join(f"{k} x W" for k in scales) + " |",
        "|---|" + "---:|" * len(scales),
    ]
    row(
        f"{args.runs} runs through the API (`start_run`, `finish`)",
        lambda r: f"{r['api_runs_s']:.1f}",
    )
    row("copies of the runs in SQL", lambda r: f"{r['clone_s']:.1f}")
    row("`INSERT ... SELECT` of the rows", lambda r: f"{r['fill_s']:.1f}")
    row("`VACUUM ANALYZE`", lambda r: f"{r['vacuum_s']:.1f}")
    return "\n".join(lines)


def parse_scales(text: str) -> list[int]:
    """``1,10,100`` -> [1, 10, 100], each scale once."""
    try:
        scales = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        scales = []
    if not scales or min(scales) < 1:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected positive integers separated by commas, e.g. 1,10,100"
        )
    return list(dict.fromkeys(scales))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scales", type=parse_scales, default=[1, 10, 100], help="k in k x W (default 1,10,100)"
    )
    parser.add_argument("--runs", type=int, default=200, help="runs in W (default 200)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (default 1000)")
    parser.add_argument("--val-every", type=int, default=100, help="default 100")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per query (default 5)")
    parser.add_argument(
        "--chunk-runs", type=int, default=2000, help="runs per INSERT ... SELECT (default 2000)"
    )
    parser.add_argument("--seed", type=float, default=0.5, help="setseed() value, in [-1, 1]")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each scale's schema (e.g. to EXPLAIN queries on it); its name is printed",
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.steps, args.val_every, args.repeat, args.chunk_runs) < 1:
        parser.error("--runs, --steps, --val-every, --repeat and --chunk-runs must be at least 1")
    if args.steps < args.val_every:
        parser.error("--steps must be at least --val-every (W needs validation values)")
    args.revision = git_revision()  # now: the checkout may change during a long run
    started = time.perf_counter()
    results = {}
    for scale in args.scales:
        results[scale] = bench_scale(scale, args)
    print(report(args, list(results), results, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
