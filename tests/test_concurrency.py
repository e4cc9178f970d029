"""Many processes on one database: new columns, migrations, and forking with an open run."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sqltrack_core as sqltrack
from sqltrack_core.migrations import builtin_migrations

pytestmark = pytest.mark.slow

WAIT_S = 120.0  # upper bound for child processes; never a timing assertion
STEPS = 300

#: The keys every writer adds, each introduced at a different step in each process. They
#: include sanitised-name collisions (val/acc vs val_acc, Loss vs loss) and one key whose
#: int column some processes widen while others write ints into it.
KEYS = [
    "train/loss",
    "val/acc",
    "val_acc",
    "Loss",
    "loss",
    "lr",
    "epoch",
    "grad/norm",
    "is_best",
    "mixed",
]


def value(key: str, proc: int, step: int) -> Any:
    """The value process `proc` logs for `key` at `step` (the parent recomputes it to check)."""
    if key == "epoch":
        return step // 10
    if key == "is_best":
        return step % 7 == 0
    if key == "mixed":  # odd processes log fractions: the int column gets widened meanwhile
        return step + (0.5 if proc % 2 else 0)
    return proc * 1000 + step + 0.25


def logged_keys(proc: int, step: int) -> list[str]:
    """The keys process `proc` logs at `step`: its own order, key i new at step 20 * i."""
    order = KEYS[:]
    random.Random(proc).shuffle(order)
    return order[: 1 + step // 20]


WRITER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path

    sys.path.insert(0, sys.argv[4])
    from test_concurrency import STEPS, logged_keys, value
    import sqltrack_core as sqltrack

    url, proc, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("sqltrack").addHandler(handler)
    logging.getLogger("sqltrack").setLevel(logging.DEBUG)

    (gate / f"ready-{proc}").touch()
    while not (gate / "go").exists():
        time.sleep(0.002)
    tracker = sqltrack.connect(url, flush_interval=0.02, max_pending=25)
    with tracker.start_run("concurrent", name=f"proc-{proc}") as run:
        for step in range(STEPS):
            run.log({k: value(k, proc, step) for k in logged_keys(proc, step)}, step=step)
    assert not records, [r.getMessage() for r in records]
    print(run.id)
    """
)


def start_all(
    script: str, url: str, n: int, gate: Path, *extra: str
) -> list[subprocess.Popen[str]]:
    """Start `n` processes that wait at a gate file, then open the gate for all at once."""
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(i), str(gate), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + WAIT_S
    while len(list(gate.glob("ready-*"))) < n and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    (gate / "go").touch()
    return procs


def wait_all(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Wait for every process; fail with its stderr if one did not exit cleanly."""
    results = []
    try:
        for proc in procs:
            results.append(proc.communicate(timeout=WAIT_S))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    return [out for out, _ in results]


def count(tracker: sqltrack.Tracker, sql: str) -> int:
    return int(tracker.query(sql).iloc[0, 0])


@pytest.mark.parametrize(
    ("url_fixture", "processes"), [("sqlite_url", 4), ("pg_url", 8)], ids=["sqlite", "postgresql"]
)
def test_processes_add_the_same_keys_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, url_fixture: str, processes: int
) -> None:
    """Verify that processes adding the same keys at once lose no row and agree on one column per key."""
    url: str = request.getfixturevalue(url_fixture)
    tests_dir = str(Path(__file__).resolve().parent)
    procs = start_all(WRITER_SCRIPT, url, processes, tmp_path / "gate", tests_dir)
    run_ids = [int(out.split()[0]) for out in wait_all(procs)]
    with sqltrack.connect(url) as tracker:
        dialect = tracker.dialect
        assert count(tracker, "SELECT count(*) FROM schema_migrations") == len(
            builtin_migrations(dialect)
        )
        assert count(tracker, "SELECT count(*) FROM runs WHERE status = 'completed'") == processes
        assert count(tracker, "SELECT count(*) FROM metrics") == processes * STEPS
        assert count(tracker, "SELECT count(*) FROM metrics WHERE extra IS NOT NULL") == 0
        mapping = tracker.query("SELECT key, column_name, sql_type FROM metric_columns")
        assert sorted(mapping["key"]) == sorted(KEYS)
        assert mapping["column_name"].is_unique
        if dialect == "sqlite":
            table = set(tracker.query("SELECT name FROM pragma_table_info('metrics')")["name"])
        else:
            table = set(
                tracker.query(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'metrics'"
                )["column_name"]
            )
        assert table == {"run_id", "step", "logged_at", "extra", *mapping["column_name"]}
        types = dict(zip(mapping["key"], mapping["sql_type"], strict=True))
        assert types["mixed"] == ("REAL" if dialect == "sqlite" else "DOUBLE PRECISION")
        df = tracker.metrics(run_ids)
        assert len(df) == processes * STEPS
        names = tracker.query("SELECT id, name FROM runs")
        proc_of = {rid: int(name.split("-")[1]) for rid, name in names.itertuples(index=False)}
        for key in KEYS:
            column = df[key].tolist()
            for run_id, step, got in zip(df["run_id"], df["step"], column, strict=True):
                proc = proc_of[run_id]
                if key in logged_keys(proc, step):
                    assert got == value(key, proc, step), (key, proc, step)
                else:
                    assert pd.isna(got), (key, proc, step)


MIGRATE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import sqltrack_core as sqltrack

    url, gate = sys.argv[1], Path(sys.argv[3])
    (gate / f"ready-{sys.argv[2]}").touch()
    while not (gate / "go").exists():
        time.sleep(0.002)
    with sqltrack.connect(url) as tracker:
        tracker.query("SELECT count(*) FROM metric_columns")
    """
)


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"], ids=["sqlite", "postgresql"])
def test_processes_starting_at_once_migrate_once(
    request: pytest.FixtureRequest, tmp_path: Path, url_fixture: str
) -> None:
    """Verify that processes connecting at once to an empty database apply each migration once."""
    url: str = request.getfixturevalue(url_fixture)
    wait_all(start_all(MIGRATE_SCRIPT, url, 8, tmp_path / "gate"))
    with sqltrack.connect(url) as tracker:
        expected = builtin_migrations(tracker.dialect)
        applied = tracker.query("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [tuple(r) for r in applied.itertuples(index=False)] == [
            (m.version, m.name) for m in expected
        ]


FORK_SCRIPT = textwrap.dedent(
    """
    import gc, logging, os, sys

    import sqltrack_core as sqltrack

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("sqltrack").addHandler(handler)
    logging.getLogger("sqltrack").setLevel(logging.DEBUG)

    tracker = sqltrack.connect(sys.argv[1], flush_interval=0.02)
    run = tracker.start_run("fork")
    for step in range(10):
        run.log({"x": step, "phase": "before"}, step=step)
    assert run.flush(timeout=60)  # the writer thread and its connection exist now
    assert run._writer._backend is not None

    def child(how):
        pid = os.fork()
        if pid == 0:  # the child logs nothing and exits
            if how == "os._exit":
                os._exit(0)
            # drop the inherited run and tracker, collect them, then exit normally: atexit
            # handlers and interpreter shutdown run in the child
            globals().pop("run")
            globals().pop("tracker")
            gc.collect()
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, (how, status)

    child("os._exit")
    child("sys.exit")
    for step in range(10, 20):
        run.log({"x": step, "phase": "after"}, step=step)
    assert run.flush(timeout=60)
    assert int(tracker.query("SELECT count(*) FROM metrics").iloc[0, 0]) == 20
    run.finish()
    assert tracker.query("SELECT status FROM runs").iloc[0, 0] == "completed"
    assert not records, [r.getMessage() for r in records]
    print(run.id)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork is POSIX only")
@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"], ids=["sqlite", "postgresql"])
def test_fork_with_open_run(request: pytest.FixtureRequest, url_fixture: str) -> None:
    """Verify that forked children that exit leave the parent's run and connections working."""
    url: str = request.getfixturevalue(url_fixture)
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "server closed the connection" not in proc.stderr
    run_id = int(proc.stdout.split()[0])
    with sqltrack.connect(url) as tracker:
        assert tracker.query("SELECT status FROM runs").iloc[0, 0] == "completed"
        df = tracker.metrics(run_id)
        assert list(df["x"]) == list(range(20))
        assert list(df["phase"]) == ["before"] * 10 + ["after"] * 10
