"""Benchmark: what a PostgreSQL outage costs a training loop, and whether anything is lost.

Each scenario runs in a fresh process that logs a 6-key row per step at a steady pace through a
TCP proxy (``tests/_proxy.py``) to this machine's PostgreSQL, while the proxy cuts (or
black-holes) the path and restores it. It prints, per scenario: rows logged, rows in the
database after recovery (or after ``sqltrack sync``, for a process that exits while the
database is down), the ``log()`` latency during the outage (median, p99, max) next to the same
loop with no outage in the same run, the process's peak RSS, and how long the exit took.

    .venv/bin/python tests/benchmarks/bench_outage.py             # 2 s and 30 s cuts, black hole, exit
    .venv/bin/python tests/benchmarks/bench_outage.py --quick     # 2 s cut and exit only
    .venv/bin/python tests/benchmarks/bench_outage.py --long      # also a 120 s cut
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # _common.py, and tests/_proxy.py

from _common import DEFAULT_PG_URL, git_revision, pg_admin, pg_version, with_search_path  # noqa: E402

KEYS = ("train/loss", "train/acc", "lr", "grad_norm", "tokens", "epoch")


def _row(step: int) -> dict[str, Any]:
    return {
        "train/loss": 1.0 / (step + 1),
        "train/acc": step / (step + 1),
        "lr": 3e-4,
        "grad_norm": 0.5 + step % 7,
        "tokens": step * 2048,
        "epoch": step // 1000,
    }


def child(args: argparse.Namespace) -> None:
    """One scenario, in its own process: log, fault, restore (or exit), report as JSON."""
    from _proxy import FaultProxy

    import sqltrack_core as sqltrack

    proxy = FaultProxy().start()
    tracker = sqltrack.connect(
        proxy.url(args.url), finish_timeout=args.finish_timeout, write_timeout=5.0
    )
    run = tracker.start_run("bench-outage", name=args.scenario)
    period = 1.0 / args.rate
    step = 0
    latencies: list[float] = []
    clock = time.perf_counter

    def loop(seconds: float, record: bool) -> None:
        nonlocal step
        end = time.monotonic() + seconds
        next_at = clock()
        while time.monotonic() < end:
            row = _row(step)
            t0 = clock()
            run.log(row, step=step)
            t1 = clock()
            if record:
                latencies.append(t1 - t0)
            step += 1
            next_at += period
            pause = next_at - clock()
            if pause > 0:
                time.sleep(pause)

    loop(args.before, record=False)
    if args.fault != "none":
        getattr(proxy, args.fault)()
    loop(args.outage, record=True)
    report: dict[str, Any] = {"logged": step, "uuid": str(run.uuid)}
    report["latency_us"] = _latency(latencies)
    if args.exit_while_down:
        report["rss_mb"] = _peak_rss_mb()
        print(json.dumps(report), flush=True)
        sys.exit(0)  # atexit finishes the run: waits finish_timeout, then spools
    if args.fault != "none":
        proxy.restore()
    loop(args.after, record=False)
    run.finish()
    report["logged"] = step
    report["rss_mb"] = _peak_rss_mb()
    print(json.dumps(report), flush=True)
    tracker.close()
    proxy.close()


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM, not ru_maxrss: ru_maxrss keeps the peak of the
    parent this process was forked from (before its exec), which would credit us its pandas."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _latency(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"median": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered) * 1e6,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "max": ordered[-1] * 1e6,
    }


def _rows(url: str, run_uuid: str) -> tuple[int, str]:
    import sqltrack_core as sqltrack

    with sqltrack.connect(url, offline_ok=False) as tracker:
        info = tracker.run_info(run_uuid)
        count = tracker.query(f"SELECT count(*) AS n FROM metrics WHERE run_id = {int(info['id'])}")
        return int(count["n"].iloc[0]), str(info["status"])


def scenario(
    name: str,
    url: str,
    fault: str,
    outage: float,
    rate: int,
    *,
    exit_while_down: bool = False,
    finish_timeout: float = 5.0,
) -> dict[str, Any]:
    spool = tempfile.mkdtemp(prefix="sqltrack-bench-spool-")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--url",
        url,
        "--scenario",
        name,
        "--fault",
        fault,
        "--outage",
        str(outage),
        "--rate",
        str(rate),
        "--finish-timeout",
        str(finish_timeout),
    ]
    if exit_while_down:
        cmd.append("--exit-while-down")
    env = {**os.environ, "SQLTRACK_SPOOL_DIR": spool, "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    reported = time.monotonic()
    _, err = proc.communicate(timeout=outage + finish_timeout + 300)
    ended = time.monotonic()
    if proc.returncode != 0 or not line.strip():
        raise SystemExit(f"scenario {name} failed (exit {proc.returncode}):\n{err[-3000:]}")
    report = json.loads(line)
    report["exit_s"] = ended - reported if exit_while_down else None
    report["wall_s"] = ended - started
    if exit_while_down:
        from sqltrack_core import offline

        os.environ["SQLTRACK_SPOOL_DIR"] = spool
        sent = offline.sync_spools(to=url)
        report["spools"] = len(sent)
    report["in_db"], report["status"] = _rows(url, report["uuid"])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--rate", type=int, default=1000, help="steps per second logged")
    parser.add_argument("--quick", action="store_true", help="2 s cut and exit-while-down only")
    parser.add_argument("--long", action="store_true", help="also a 120 s cut")
    parser.add_argument("--finish-timeout", type=float, default=5.0)
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--fault", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--outage", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--before", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--after", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--exit-while-down", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    schema = f"bench_outage_{uuid.uuid4().hex[:8]}"
    pg_admin(args.pg_url, f'CREATE SCHEMA "{schema}"')
    url = with_search_path(args.pg_url, schema)
    plan: list[tuple[str, str, float, bool]] = [("no outage (baseline)", "none", 5.0, False)]
    plan.append(("cut 2 s", "cut", 2.0, False))
    if not args.quick:
        plan += [("cut 30 s", "cut", 30.0, False), ("black hole 30 s", "blackhole", 30.0, False)]
    if args.long:
        plan.append(("cut 120 s", "cut", 120.0, False))
    plan.append(("exit while down", "cut", 2.0, True))
    print(f"# Outages (`bench_outage.py`, {git_revision()}, {pg_version(args.pg_url)})")
    print(
        f"\n{args.rate} steps/s of {len(KEYS)} keys through a TCP proxy; `log()` latency "
        "measured during the outage (the baseline: the same loop, no outage); exit-while-down "
        f"exits with finish_timeout={args.finish_timeout:g} s, then `sqltrack sync` sends its "
        "spool.\n"
    )
    print(
        "| scenario | rows logged | rows in DB after | lost | log() median / p99 / max (µs) "
        "| peak RSS (MB) | exit (s) | final status |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---|")
    try:
        for name, fault, outage, exit_while_down in plan:
            r = scenario(
                name,
                url,
                fault,
                outage,
                args.rate,
                exit_while_down=exit_while_down,
                finish_timeout=args.finish_timeout,
            )
            lat = r["latency_us"]
            exit_s = "" if r["exit_s"] is None else f"{r['exit_s']:.1f}"
            print(
                f"| {name} | {r['logged']:,} | {r['in_db']:,} | {r['logged'] - r['in_db']} | "
                f"{lat['median']:.1f} / {lat['p99']:.1f} / {lat['max']:.0f} | "
                f"{r['rss_mb']:.0f} | {exit_s} | {r['status']} |",
                flush=True,
            )
    finally:
        pg_admin(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
