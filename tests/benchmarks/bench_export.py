"""Export throughput and memory: ``sqltrack export`` against bare SQL and Python's csv module.

For each backend it logs ``--values`` metric values through the public API (default 10M:
``--runs`` 100 runs x 5 keys x the steps that make up the rest, 20,000 each), then runs each
export in a subprocess of its own, so that its peak RSS (``VmHWM`` of that process, written by a
small wrapper at exit) is its own, and prints wall time, values/s, peak RSS and file size of:

- ``sqltrack export`` as a user runs it (``python -m sqltrack_core export``): wide CSV, long
  CSV and Parquet (wide; long Parquet too with ``--all-layouts``);
- bare SQL plus Python's csv module, as one writes it by hand: ``SELECT run_id, step,
  logged_at, <metric columns> FROM metrics ORDER BY run_id, step`` on the driver's default
  cursor, ``csv.writer(f).writerows(cursor)`` (wide), and the same rows unpivoted in a Python
  loop (long). It writes less than the export (no run UUID, experiment or name, the stored
  time and float text as the driver returns them) and checks nothing; on PostgreSQL the
  default (client-side) cursor holds the whole result in memory;
- the floor: the interpreter with the CLI imported (``python -m sqltrack_core --help``).

Usage::

    python tests/benchmarks/bench_export.py                    # 10M values, both backends
    python tests/benchmarks/bench_export.py --quick            # 200k values: a smoke check
    python tests/benchmarks/bench_export.py --backends sqlite --values 1000000
    python tests/benchmarks/bench_export.py --pg-url postgresql://user@host/db

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import DEFAULT_PG_URL, git_revision, pg_admin, pg_unavailable, with_search_path

KEYS = ("train/loss", "train/acc", "lr", "grad_norm", "val/loss")
QUICK_VALUES = 200_000
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# -- the data -----------------------------------------------------------------------------------


def fill(url: str, runs: int, steps: int) -> float:
    """Log `runs` runs of `steps` steps x len(KEYS) values through the public API; seconds."""
    import sqltrack_core as sqltrack

    started = time.perf_counter()
    with sqltrack.connect(url) as tracker:
        for r in range(runs):
            with tracker.start_run("bench-export", name=f"run-{r}", params={"lr": 1e-3}) as run:
                for step in range(steps):
                    x = step / steps
                    run.log(
                        {
                            "train/loss": 2.5 * math.exp(-3 * x) + 0.01 * r,
                            "train/acc": 1 - math.exp(-4 * x),
                            "lr": 1e-3 * (1 - x),
                            "grad_norm": 1.0 + (step % 17) / 17,
                            "val/loss": 2.6 * math.exp(-3 * x),
                        },
                        step=step,
                    )
    return time.perf_counter() - started


# -- the bare baselines (run as children of this script) -----------------------------------------


def _bare_rows(url: str) -> tuple[Any, Any]:
    """A driver connection and a cursor over the wide rows, as one writes it by hand."""
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(url[len("sqlite:///") :])
        columns = [r[0] for r in conn.execute("SELECT column_name FROM metric_columns")]
    else:
        import psycopg

        conn = psycopg.connect(url)
        columns = [r[0] for r in conn.execute("SELECT column_name FROM metric_columns")]
    select = ", ".join(["run_id", "step", "logged_at", *(f'"{c}"' for c in columns)])
    cursor = conn.cursor()
    cursor.execute(f"SELECT {select} FROM metrics ORDER BY run_id, step")
    return conn, cursor


def bare(kind: str, url: str, out: str) -> None:
    conn, cursor = _bare_rows(url)
    names = [d[0] for d in cursor.description]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        if kind == "wide":
            writer.writerow(names)
            writer.writerows(cursor)
        else:
            writer.writerow(["run_id", "step", "logged_at", "key", "value"])
            keys = names[3:]
            for row in cursor:
                head = row[:3]
                for key, value in zip(keys, row[3:], strict=True):
                    if value is not None:
                        writer.writerow((*head, key, value))
    conn.close()


# -- measuring ------------------------------------------------------------------------------------


#: runs a module or script as ``python -m``/``python script`` would, then writes the process's
#: peak RSS (VmHWM: this process only, where ru_maxrss would count the parent's pages it was
#: forked with) to the file named by its first argument
_PEAK = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def _peak():
    with open("/proc/self/status") as status:
        hwm = status.read().split("VmHWM:")[1].split()[0]
    with open(peak_file, "w") as out:
        out.write(hwm)
atexit.register(_peak)
target = sys.argv[1]
del sys.argv[0]
if target.endswith(".py"):
    sys.path.insert(0, target.rpartition("/")[0])  # as python script.py does
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def measure(command: list[str], tmp: Path) -> tuple[float, float]:
    """Run `command` (a module or script and its arguments) in a Python of its own; its wall
    time (s) and peak RSS (MB)."""
    peak = tmp / "peak.txt"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(peak), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return wall, int(peak.read_text()) / 1024


def cases(url: str, out: Path, all_layouts: bool) -> list[tuple[str, list[str], Path | None]]:
    """(label, command, file it writes) of each measured path, in the table's order."""
    me = str(Path(__file__).resolve())

    def export(*args: str, to: str) -> list[str]:
        return ["sqltrack_core", "export", "--url", url, *args, "-o", str(out / to)]

    found: list[tuple[str, list[str], Path | None]] = [
        ("floor: the CLI imported (`sqltrack --help`)", ["sqltrack_core", "--help"], None),
        ("`sqltrack export`, wide CSV", export(to="w.csv"), out / "w.csv"),
        ("bare SQL + csv, wide", [me, "--child", "wide", url, str(out / "bw.csv")], out / "bw.csv"),
        (
            "`sqltrack export --layout long`, CSV",
            export("--layout", "long", to="l.csv"),
            out / "l.csv",
        ),
        (
            "bare SQL + csv, long (Python loop)",
            [me, "--child", "long", url, str(out / "bl.csv")],
            out / "bl.csv",
        ),
        ("`sqltrack export`, Parquet", export(to="w.parquet"), out / "w.parquet"),
    ]
    if all_layouts:
        found.append(
            (
                "`sqltrack export --layout long`, Parquet",
                export("--layout", "long", to="l.parquet"),
                out / "l.parquet",
            )
        )
    return found


def run_backend(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    steps = max(1, args.values // (args.runs * len(KEYS)))
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        schema = f"bench_export_{uuid.uuid4().hex[:12]}"
        pg_admin(args.pg_url, f'CREATE SCHEMA "{schema}"')
        url = with_search_path(args.pg_url, schema)
    try:
        ingest = fill(url, args.runs, steps)
        rows = []
        for label, command, path in cases(url, tmp, args.all_layouts):
            wall, rss = measure(command, tmp)
            size = path.stat().st_size / 2**20 if path is not None else None
            rows.append((label, wall, rss, size))
            if path is not None:
                path.unlink()
        return {
            "rows": rows,
            "values": args.runs * steps * len(KEYS),
            "ingest": ingest,
            "steps": steps,
        }
    finally:
        if schema is not None:
            pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp / "bench.db") + suffix).unlink(missing_ok=True)


def versions(backends: list[str], pg_url: str) -> str:
    parts = [f"SQLite {sqlite3.sqlite_version}"] if "sqlite" in backends else []
    if "postgresql" in backends:
        import psycopg

        with psycopg.connect(pg_url) as conn:
            (version,) = conn.execute("SHOW server_version").fetchone()  # type: ignore[misc]
        parts.append(f"PostgreSQL {version} (psycopg {psycopg.__version__})")
    try:
        import pyarrow

        parts.append(f"pyarrow {pyarrow.__version__}")
    except ImportError:
        parts.append("pyarrow not installed")
    return ", ".join(parts)


def report(args: argparse.Namespace, backends: list[str], results: dict[str, Any]) -> str:
    first = next(iter(results.values()))
    lines = [
        f"### Export: {first['values']:,} values ({args.runs} runs x {first['steps']:,} steps x "
        f"{len(KEYS)} keys), each export in a subprocess of its own",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; {versions(backends, args.pg_url)}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; revision {git_revision()}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        "| backend | path | wall (s) | values/s | peak RSS (MB) | file (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend in backends:
        res = results[backend]
        for label, wall, rss, size in res["rows"]:
            rate = f"{res['values'] / wall:,.0f}" if size is not None else ""
            shown = f"{size:,.0f}" if size is not None else ""
            lines.append(
                f"| {NAMES[backend]} | {label} | {wall:.2f} | {rate} | {rss:,.0f} | {shown} |"
            )
    lines.append("")
    lines.append(
        "Ingest of the data through `run.log()` (not part of the comparison): "
        + ", ".join(f"{NAMES[b]} {results[b]['ingest']:.1f} s" for b in backends)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        bare(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=10_000_000, help="metric values to export")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_VALUES:,} values")
    parser.add_argument("--all-layouts", action="store_true", help="long Parquet too")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    if args.quick:
        args.values = QUICK_VALUES
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in NAMES:
            parser.error(f"unknown backend {b!r}; expected sqlite and/or postgresql")
    if "postgresql" in backends and (reason := pg_unavailable(args.pg_url)) is not None:
        print(f"note: PostgreSQL is unreachable ({reason}); its rows are skipped", file=sys.stderr)
        backends.remove("postgresql")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sqltrack-bench-export-") as tmp:
        for backend in backends:
            results[backend] = run_backend(backend, args, Path(tmp))
    print(report(args, backends, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
