"""Outages, for real: a TCP proxy cut, reset and black-holed between a run and PostgreSQL, a
database that appears late, killed processes, locks held by an analyst, refused columns."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _integration import TESTS, run_python
from _proxy import FaultProxy

import sqltrack_core as sqltrack
from sqltrack_core import _store, offline
from sqltrack_core.errors import SQLTrackWarning


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of this machine's PostgreSQL."""
    with FaultProxy() as p:
        yield p


def _values(url: str, sql: str) -> list[tuple[Any, ...]]:
    with sqltrack.connect(url, offline_ok=False) as tracker:
        return list(tracker.query(sql).itertuples(index=False, name=None))


def _log_during(run: sqltrack.Run, seconds: float, start: int = 0) -> int:
    """Log steps at a steady pace for `seconds`; return the next step."""
    step, end = start, time.monotonic() + seconds
    while time.monotonic() < end:
        run.log({"loss": 1.0 / (step + 1), "step_seen": step}, step=step)
        step += 1
        time.sleep(0.002)
    return step


def _start(script: str, url: str, ready: str) -> subprocess.Popen[str]:
    """Run `script` on `url` in a new process (tests/ on its path) until it prints `ready`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == ready
    return proc


def _returns_soon(call: Any, within: float = 15.0) -> Any:
    """Call `call` on a thread; its result, or fail if it is still waiting after `within` s."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(within)
    assert result, f"{call} was still waiting after {within} s"
    return result[0]


def _spool_rows(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])


@pytest.mark.parametrize("fault", ["cut", "reset", "blackhole"])
def test_fault_mid_training_loses_nothing(
    pg_url: str, proxy: FaultProxy, fault: str, spool_dir: Path
) -> None:
    """Verify that a cut, a reset and a black hole mid-training lose no row: rows go to the
    spool during the outage and arrive, in full, once the path is restored."""
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1, write_timeout=1.0)
    with (
        pytest.warns(SQLTrackWarning) as seen,
        tracker.start_run("outage", params={"fault": fault}) as run,
    ):
        step = _log_during(run, 0.5)
        getattr(proxy, fault)()
        step = _log_during(run, 3.0, step)
        flushed = _returns_soon(run.flush)  # training never waits for the outage
        spooled = _spool_rows(run.spool_path)  # memory stays bounded: rows are on disk
        proxy.restore()
        step = _log_during(run, 0.5, step)
    messages = [str(w.message) for w in seen]
    assert any("lost the database" in m for m in messages), messages
    assert any("the database is back" in m for m in messages), messages
    if fault != "reset":  # a reset path takes new connections at once: no outage to spool
        assert spooled > 0 and flushed is False  # False: in the spool, not the database
    rows = _values(
        pg_url, "SELECT count(*), count(DISTINCT step), min(step), max(step) FROM metrics"
    )
    assert rows == [(step, step, 0, step - 1)]
    assert _values(pg_url, "SELECT count(*) FROM metrics WHERE step_seen <> step") == [(0,)]
    assert _values(pg_url, "SELECT status FROM runs") == [("completed",)]
    assert list(spool_dir.iterdir()) == []  # replayed and removed
    tracker.close()


@pytest.mark.slow
def test_thirty_second_cut_loses_nothing(pg_url: str, proxy: FaultProxy) -> None:
    """Verify that a 30 s cut mid-training loses nothing and the tracker's own reader
    connection works again afterwards."""
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.2)
    assert len(tracker.runs()) == 0
    with pytest.warns(SQLTrackWarning) as seen, tracker.start_run("outage") as run:
        step = _log_during(run, 0.5)
        proxy.cut()
        step = _log_during(run, 30.0, step)
        proxy.restore()
        step = _log_during(run, 0.5, step)
    messages = " ".join(str(w.message) for w in seen)
    assert "lost the database" in messages and "the database is back" in messages
    assert _values(pg_url, "SELECT count(*) FROM metrics") == [(step,)]
    runs = tracker.runs()  # the reader reconnects by itself
    assert list(runs["status"]) == ["completed"]
    tracker.close()


def test_tracker_reader_reconnects_after_a_blip(pg_url: str, proxy: FaultProxy) -> None:
    """Verify that a tracker's readers and start_run work again after a 2 s cut."""
    tracker = sqltrack.connect(proxy.url(pg_url))
    tracker.start_run("blip").finish()
    proxy.cut()
    time.sleep(2.0)
    proxy.restore()
    assert len(tracker.runs()) == 1
    tracker.start_run("blip").finish()
    assert len(tracker.runs()) == 2
    tracker.close()


EXIT_WHILE_DOWN = textwrap.dedent(
    """
    import sys, time
    from _proxy import FaultProxy
    import sqltrack_core as sqltrack

    proxy = FaultProxy().start()
    tracker = sqltrack.connect(proxy.url(sys.argv[1]), flush_interval=0.1, finish_timeout=2)
    run = tracker.start_run("exit-while-down", params={"lr": 0.1})
    for step in range(400):
        run.log({"x": step}, step=step)
        if step == 200:
            time.sleep(0.3)
            proxy.cut()
        time.sleep(0.001)
    run.log_params({"late": True})
    run.add_tags("after-cut")
    print("exiting", flush=True)
    sys.exit(3)
    """
)


def test_exit_while_down_then_sync(pg_url: str, spool_dir: Path) -> None:
    """Verify that a program exiting while its database is down ends within its
    finish_timeout, keeps its exit code, leaves one line naming the spool, and that
    `sqltrack sync` later brings every row and the right final status."""
    started = time.monotonic()
    done = run_python("-c", EXIT_WHILE_DOWN, pg_url)
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-2000:]
    assert elapsed < 2 + 15  # it once hung twice its finish_timeout (121 s)
    assert "send it with: sqltrack sync" in done.stderr
    [spool] = [p for p in spool_dir.iterdir() if p.suffix == ".sqlite"]
    assert str(spool) in done.stderr
    from click.testing import CliRunner

    from sqltrack_core.cli import cli

    dry = CliRunner().invoke(cli, ["sync", "--dry-run", "--to", pg_url])
    assert dry.exit_code == 0, dry.output
    assert "would send run" in dry.output and spool.exists()
    sent = CliRunner().invoke(cli, ["sync", "--to", pg_url])
    assert sent.exit_code == 0, sent.output
    assert "spool removed" in sent.output and not spool.exists()
    assert _values(pg_url, "SELECT count(*), max(x) FROM metrics") == [(400, 399)]
    [(status, params, tags)] = _values(pg_url, "SELECT status, params, tags FROM runs")
    assert status == "failed"  # sys.exit(3)
    assert params == {"lr": 0.1, "late": True} and tags == ["after-cut"]
    again = CliRunner().invoke(cli, ["sync", "--to", pg_url])
    assert again.exit_code == 0 and "no spools" in again.output


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_start_while_down_then_database_appears(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Verify that a run started while its database is down gets its id, rows, params and
    status once the database appears."""
    if dialect == "sqlite":
        folder = tmp_path / "later"
        url, appear = f"sqlite:///{folder}/sqltrack.db", folder.mkdir
        direct = url
    else:
        pg_url = request.getfixturevalue("pg_url")
        proxy = request.getfixturevalue("proxy")
        proxy.cut()
        url, appear, direct = proxy.url(pg_url), proxy.restore, pg_url
    with pytest.warns(SQLTrackWarning, match="cannot reach"):
        tracker = sqltrack.connect(url, flush_interval=0.1)
    run = tracker.start_run("late-db", params={"a": 1})
    assert run.id is None
    for step in range(50):
        run.log({"v": step}, step=step)
    run.log_params({"b": 2})
    time.sleep(0.5)
    appear()
    with pytest.warns(SQLTrackWarning, match="the database is back"):
        run.finish()
    assert run.id is not None
    assert _values(direct, "SELECT count(*), max(v) FROM metrics") == [(50, 49)]
    [(status, params)] = _values(direct, "SELECT status, params FROM runs")
    assert status == "completed" and sqltrack_params(params) == {"a": 1, "b": 2}
    tracker.close()


def sqltrack_params(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


KILLED = textwrap.dedent(
    """
    import sys, time
    import sqltrack_core as sqltrack

    tracker = sqltrack.connect(sys.argv[1], flush_interval=0.2)
    run = tracker.start_run("killed")
    for step in range(500):
        run.log({"x": step}, step=step)
    time.sleep(1.0)  # several flush intervals
    print("logged", flush=True)
    while True:
        step += 1
        run.log({"x": step}, step=step)
        time.sleep(0.01)
    """
)


def test_sigkill_loses_at_most_one_interval_and_reads_crashed(db_url: str) -> None:
    """Verify that SIGKILL loses at most the last flush interval and the run reads crashed
    once its heartbeat is stale."""
    proc = _start(KILLED, db_url, "logged")
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    [(count, top)] = _values(db_url, "SELECT count(*), max(x) FROM metrics")
    assert count >= 500 and top == count - 1  # everything before the last interval
    with sqltrack.connect(db_url, stale_after=0.5, offline_ok=False) as tracker:
        time.sleep(0.6)
        assert list(tracker.runs()["status"]) == ["crashed"]


KILLED_WHILE_DOWN = textwrap.dedent(
    """
    import sys, time
    from _proxy import FaultProxy
    import sqltrack_core as sqltrack

    proxy = FaultProxy().start()
    tracker = sqltrack.connect(proxy.url(sys.argv[1]), flush_interval=0.1)
    run = tracker.start_run("killed-while-down")
    run.log({"x": 0}, step=0)
    run.flush()
    proxy.cut()
    for step in range(1, 300):
        run.log({"x": step}, step=step)
    time.sleep(1.0)  # several flush intervals: on disk by now
    print("spooled", flush=True)
    time.sleep(60)
    """
)


def test_sigkill_while_down_keeps_the_spool(pg_url: str, spool_dir: Path) -> None:
    """Verify that a process killed while its database is down leaves its rows in the spool,
    and `sync_spools` sends them once the process is gone."""
    proc = _start(KILLED_WHILE_DOWN, pg_url, "spooled")
    live = offline.sync_spools(pg_url)
    assert [entry.skipped for entry in live] == ["still in use by a running process"]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    [sent] = offline.sync_spools(pg_url)
    assert sent.removed and sent.result.rows == 299
    assert _values(pg_url, "SELECT count(*), max(x) FROM metrics") == [(300, 299)]


HOSTILE: list[tuple[str, Any]] = [
    ("nul-value", lambda run: run.log({"text": "a\x00b"})),
    ("nul-key", lambda run: run.log({"bad\x00key": 1.0})),
    ("surrogate-value", lambda run: run.log({"text": "a\ud800"})),
    ("surrogate-key", lambda run: run.log({"k\udfff": 1.0})),
    ("nul-in-json", lambda run: run.log({"cfg": {"a": ["x\x00"]}})),
    ("deep", lambda run: run.log({"deep": _nested(1000)})),
    ("params-nul", lambda run: run.log_params({"p": "x\x00"})),
    ("params-surrogate-key", lambda run: run.log_params({"\ud800": 1})),
    ("params-deep", lambda run: run.log_params({"deep": _nested(100)})),
    ("tags", lambda run: run.set_tags(["ok", "bad\ud800"])),
    ("comment", lambda run: setattr(run, "comment", "x\x00")),
]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("call", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_value_is_refused_and_the_run_goes_on(tracker: sqltrack.Tracker, call: Any) -> None:
    """Verify that a hostile value is refused at the call site with a named error, leaves the
    run's state as it was, and a sentinel logged after it arrives."""
    run = tracker.start_run("hostile", params={"keep": 1}, tags=["t"], comment="c")
    run.log({"before": 1.0}, step=0)
    with pytest.raises((sqltrack.MetricTypeError, sqltrack.ConfigurationError)) as info:
        call(run)
    message = str(info.value)
    assert "NUL" in message or "surrogate" in message or "64" in message
    assert run.params == {"keep": 1} and run.tags == ["t"] and run.comment == "c"
    run.log({"sentinel": 42.0}, step=1)
    run.log_params({"after": True})
    run.finish()
    frame = tracker.metrics(run.id)
    assert list(frame["sentinel"].dropna()) == [42.0]
    info_ = tracker.run_info(run.id)
    assert info_["status"] == "completed" and info_["params.after"] is True


@pytest.mark.parametrize(
    "where",
    [
        lambda t: t.start_run("exp\x00"),
        lambda t: t.start_run("exp", name="n\ud800"),
        lambda t: t.start_run("exp", params={"a": "\x00"}),
        lambda t: t.start_run("exp", tags=["\x00"]),
    ],
    ids=["experiment", "name", "params", "tags"],
)
def test_hostile_run_description_is_refused(tracker: sqltrack.Tracker, where: Any) -> None:
    """Verify that start_run refuses NUL and lone surrogates in what describes a run."""
    with pytest.raises(sqltrack.ConfigurationError, match=r"NUL|surrogate"):
        where(tracker)
    assert len(tracker.runs()) == 0


def test_idle_in_transaction_reader_does_not_stall_other_runs(pg_url: str) -> None:
    """Verify that an analyst's open transaction on metrics does not queue other runs behind a
    new column: their rows keep landing, and the new key gets its column once it can."""
    tracker = sqltrack.connect(pg_url, flush_interval=0.1)
    with tracker.start_run("setup") as run:
        run.log({"shared": 1.0}, step=0)
    analyst = psycopg.connect(pg_url)  # psycopg's default: a transaction stays open
    analyst.execute("SELECT count(*) FROM metrics").fetchall()
    try:
        with pytest.warns(SQLTrackWarning, match="must wait"):
            newcomer = tracker.start_run("new-key")
            newcomer.log({"brand_new": 1.0, "shared": 2.0}, step=0)
            assert _returns_soon(newcomer.flush) is False  # it does not wait for the lock
            other = tracker.start_run("other")
            deadline = time.monotonic() + 10
            for step in range(50):
                other.log({"shared": float(step)}, step=step)
            while time.monotonic() < deadline:
                with psycopg.connect(pg_url, autocommit=True) as reader:
                    (count,) = reader.execute(
                        "SELECT count(*) FROM metrics WHERE run_id = %s", (other.id,)
                    ).fetchone()  # type: ignore[misc]
                if count == 50:
                    break
                time.sleep(0.1)
            assert count == 50  # without a lock timeout this waits forever behind the ALTER
    finally:
        analyst.rollback()
        analyst.close()
    newcomer.finish()
    other.finish()
    frame = tracker.metrics(newcomer.id)
    assert list(frame["brand_new"]) == [1.0] and list(frame["shared"]) == [2.0]
    tracker.close()


def test_refused_column_moves_only_that_key_to_extra(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that a role that may not add columns keeps typed columns for known keys, sends
    only the new key to extra, and goes back to a typed column once it may."""
    tracker = sqltrack.connect(pg_url, flush_interval=0.1)
    with tracker.start_run("owner") as run:
        run.log({"a": 1.0}, step=0)
    role = f"sqltrack_w_{uuid.uuid4().hex[:8]}"
    schema = pg_url.split("search_path%3D")[1]
    admin = psycopg.connect(pg_url.split("?")[0], autocommit=True)
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    admin.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'
    )
    admin.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
    monkeypatch.setattr(_store, "BLOCKED_RETRY_S", 0.5)
    writer_url = pg_url.replace("postgres@", f"{role}@", 1)
    try:
        writer = sqltrack.connect(writer_url, flush_interval=0.1, migrate=False)
        with pytest.warns(SQLTrackWarning, match="refused a column"):
            run = writer.start_run("writer")
            for step in range(20):
                run.log({"a": float(step), "b": float(step * 100)}, step=step)
            run.flush()
        summary = tracker.runs(metrics=["a:max", "b:max"])
        row = summary[summary["id"] == run.id].iloc[0]
        assert row["a:max"] == 19.0 and row["b:max"] == 1900.0  # b from extra, a typed
        assert _values(pg_url, f"SELECT count(a) FROM metrics WHERE run_id = {run.id}") == [(20,)]
        admin.execute(f'ALTER TABLE "{schema}".metrics OWNER TO "{role}"')
        admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        time.sleep(0.6)
        run.log({"b": 5000.0}, step=20)
        run.finish()
        assert _values(pg_url, f"SELECT b FROM metrics WHERE run_id = {run.id} AND step = 20") == [
            (5000.0,)
        ]
        writer.close()
    finally:
        admin.execute(f'ALTER TABLE "{schema}".metrics OWNER TO postgres')
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')
        admin.close()
        tracker.close()


def test_writer_thread_ends_with_the_run(tracker: sqltrack.Tracker) -> None:
    """Verify that finish() ends the run's writer thread."""
    run = tracker.start_run("threads")
    run.log({"x": 1.0})
    run.finish()
    assert run.flush()  # a flush after the end does not start it again
    names = [t.name for t in threading.enumerate()]
    assert not any(name.startswith("sqltrack-writer-threads/") for name in names)


def test_keys_past_the_column_budget_warn(db_url: str) -> None:
    """Verify that keys past the column budget go to extra with a warning naming the budget."""
    tracker = sqltrack.connect(db_url, column_budget=2, flush_interval=0.05)
    with pytest.warns(SQLTrackWarning, match="budget of 2"), tracker.start_run("budget") as run:
        run.log({"a": 1.0, "b": 2.0, "c": 3.0}, step=0)
    frame = tracker.metrics(run.id)
    assert frame.loc[0, ["a", "b", "c"]].tolist() == [1.0, 2.0, 3.0]
    tracker.close()


SIGTERM_LOOP = textwrap.dedent(
    """
    import signal, sys, time
    import sqltrack_core as sqltrack

    tracker = sqltrack.connect(sys.argv[1])
    first = tracker.start_run("first")
    ours = signal.getsignal(signal.SIGTERM)
    stop = []

    def graceful(signum, frame):  # as Lightning's: calls the handler it replaced, then stops
        stop.append(signum)
        ours(signum, frame)

    signal.signal(signal.SIGTERM, graceful)
    first.finish()  # the handler on top is not ours: left in place
    second = tracker.start_run("second")  # finds graceful (which calls ours) on top
    print("ready", flush=True)
    while not stop:
        time.sleep(0.01)
    print("stopped", second.status.value, flush=True)
    """
)


def test_sigterm_never_recurses_through_a_handler_that_calls_ours(sqlite_url: str) -> None:
    """Verify that SIGTERM ends gracefully, without RecursionError, when the handler before
    ours calls ours (a handler composed on top of ours, and a later run)."""
    proc = _start(SIGTERM_LOOP, sqlite_url, "ready")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "RecursionError" not in err and proc.returncode == 0, err[-2000:]
    assert "stopped cancelled" in out


@pytest.mark.parametrize("code", [0, 3])
def test_sys_exit_outside_a_with_block(db_url: str, code: int) -> None:
    """Verify that sys.exit(n) ends an open run as failed for n != 0 (completed for 0) and
    keeps the program's exit code."""
    script = (
        "import sys, sqltrack_core as s; run = s.connect(sys.argv[1]).start_run('exit'); "
        f"run.log({{'x': 1.0}}); sys.exit({code})"
    )
    done = run_python("-c", script, db_url)
    assert done.returncode == code, done.stderr[-2000:]
    expected = "completed" if code == 0 else "failed"
    assert _values(db_url, "SELECT status FROM runs") == [(expected,)]


SIGTERM_WHILE_DOWN = textwrap.dedent(
    """
    import sys, time
    from _proxy import FaultProxy
    import sqltrack_core as sqltrack

    proxy = FaultProxy().start()
    tracker = sqltrack.connect(proxy.url(sys.argv[1]), flush_interval=0.1)  # finish_timeout 60 s
    run = tracker.start_run("sigterm-while-down")
    run.log({"x": 0}, step=0)
    run.flush()
    proxy.cut()
    for step in range(1, 100):
        run.log({"x": step}, step=step)
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_sigterm_while_down_ends_soon_and_spools(pg_url: str) -> None:
    """Verify that SIGTERM while the database is down ends the process in seconds, not after
    finish_timeout, with the run spooled as cancelled."""
    proc = _start(SIGTERM_WHILE_DOWN, pg_url, "ready")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err[-2000:]
    assert time.monotonic() - signalled < 30  # SIGTERM waits at most 5 s, not 60
    assert "send it with: sqltrack sync" in err
    [sent] = offline.sync_spools(pg_url)
    assert sent.removed
    assert _values(pg_url, "SELECT status FROM runs") == [("cancelled",)]
    assert _values(pg_url, "SELECT count(*) FROM metrics") == [(100,)]


@pytest.mark.parametrize("route", ["replay", "sync"])
def test_provenance_of_runs_started_while_down(pg_url: str, proxy: FaultProxy, route: str) -> None:
    """Verify that runs started while the database is down still get their parents, by
    weights (exact, and through a bf16 cast), by token, and by weights with the token they
    were loaded from, once their data arrives (replayed in-process, or sent by sync)."""
    import torch

    torch.manual_seed(0)
    weights = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    with sqltrack.connect(pg_url) as direct, direct.start_run("pretrain") as base:
        base.link_from_weights({k: torch.randn_like(v) for k, v in weights.items()})
        token = base.register_checkpoint("base.pt", weights, step=10)
    proxy.cut()
    timeout = 0.5 if route == "sync" else 60.0
    with pytest.warns(SQLTrackWarning, match="cannot reach"):
        tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1, finish_timeout=timeout)
    finetune = tracker.start_run("finetune")
    assert finetune.link_from_weights(weights) == []  # found once the registry answers
    cast = tracker.start_run("cast")
    assert cast.link_from_weights({k: v.to(torch.bfloat16) for k, v in weights.items()}) == []
    resumed = tracker.start_run("resumed")
    assert resumed.link_from_token(token).run_id is None
    loaded = tracker.start_run("loaded")
    assert loaded.link_from_weights(weights, token=token) == []  # kept with the weights
    runs = (finetune, cast, resumed, loaded)
    if route == "replay":
        proxy.restore()
        with pytest.warns(SQLTrackWarning, match="the database is back"):
            for run in runs:
                run.finish()
    else:
        for run in runs:
            run.finish()
        proxy.restore()
        sent = offline.sync_spools()
        assert [entry.removed for entry in sent] == [True]
    rows = _values(
        pg_url,
        "SELECT ef.name, l.kind, et.name FROM run_links l "
        "JOIN runs f ON f.id = l.from_run_id JOIN experiments ef ON ef.id = f.experiment_id "
        "JOIN runs t ON t.id = l.to_run_id JOIN experiments et ON et.id = t.experiment_id "
        "ORDER BY ef.name",
    )
    assert rows == [
        ("cast", "finetuned_from", "pretrain"),
        ("finetune", "finetuned_from", "pretrain"),
        ("loaded", "finetuned_from", "pretrain"),
        ("resumed", "resumed_from", "pretrain"),
    ]
    [(evidence,)] = _values(
        pg_url,
        "SELECT l.evidence FROM run_links l JOIN runs r ON r.id = l.from_run_id "
        f"WHERE r.uuid = '{loaded.uuid}'",
    )
    # made by token once the data arrived, with the fraction the fingerprints give
    assert (evidence["method"], evidence["checkpoint_uuid"], evidence["fraction"]) == (
        "token",
        token["checkpoint_uuid"],
        1.0,
    )
    tracker.close()


def test_write_after_the_end_while_down(pg_url: str, proxy: FaultProxy) -> None:
    """Verify that a checkpoint registered after a run ended, while its database is down,
    reaches the database through sync with the run's final status intact."""
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1, finish_timeout=0.5)
    run = tracker.start_run("late-write")
    run.log({"x": 1.0}, step=0)
    run.flush()
    proxy.cut()
    with pytest.warns(SQLTrackWarning, match="lost the database"):
        run.log({"x": 2.0}, step=1)
        run.finish()
    run.register_checkpoint("after.pt", None, step=1)
    names = [t.name for t in threading.enumerate()]
    assert not any(name.startswith("sqltrack-writer-late-write/") for name in names)
    proxy.restore()
    sent = offline.sync_spools()
    assert sent and all(entry.removed for entry in sent)
    assert _values(pg_url, "SELECT status, ended_at IS NOT NULL FROM runs") == [("completed", True)]
    assert _values(pg_url, "SELECT count(*), max(x) FROM metrics") == [(2, 2.0)]
    assert _values(pg_url, "SELECT path FROM checkpoints") == [("after.pt",)]
    tracker.close()


def test_links_between_runs_of_one_outage_survive_the_replay(
    pg_url: str, proxy: FaultProxy
) -> None:
    """Verify that a run that ended during an outage reaches the database with the next run's
    replay, and a link to it made during the outage is kept, not dropped."""
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1, finish_timeout=0.3)
    tracker.start_run("warm-up").finish()
    proxy.cut()
    with pytest.warns(SQLTrackWarning) as seen:
        base = tracker.start_run("base")
        base.log({"x": 1.0}, step=0)
        token = base.register_checkpoint("base.pt", None, step=0)
        base.finish()  # ends while the database is away: spooled
        child = tracker.start_run("child")
        child.link_from_token(token)
        child.log({"x": 2.0}, step=0)
        proxy.restore()
        child.finish()
    assert any("the database is back" in str(w.message) for w in seen)
    rows = _values(
        pg_url,
        "SELECT ef.name, l.kind, et.name FROM run_links l "
        "JOIN runs f ON f.id = l.from_run_id JOIN experiments ef ON ef.id = f.experiment_id "
        "JOIN runs t ON t.id = l.to_run_id JOIN experiments et ON et.id = t.experiment_id",
    )
    assert rows == [("child", "resumed_from", "base")]
    assert _values(pg_url, "SELECT count(*) FROM runs WHERE status = 'completed'") == [(3,)]
    assert offline.sync_spools() == []  # nothing left behind
    tracker.close()


def test_a_continued_session_keeps_logging_while_down(pg_url: str, proxy: FaultProxy) -> None:
    """Verify that an integration's session that goes on in an existing run (a spawned worker,
    resume="continue") keeps every row logged while the database is down."""
    import pickle

    from sqltrack_integrations._session import RunSession

    session = RunSession("continued", proxy.url(pg_url), default_experiment="x")
    session.log({"loss": 1.0}, 0)
    session.finish(sqltrack.RunStatus.COMPLETED)
    copy = pickle.loads(pickle.dumps(session))  # as a spawned process gets it
    proxy.cut()
    with pytest.warns(SQLTrackWarning):
        for step in range(1, 4):
            copy.log({"loss": 1.0 / (step + 1)}, step)
        proxy.restore()
        copy.finish(sqltrack.RunStatus.COMPLETED)
    assert _values(pg_url, "SELECT count(*), max(step) FROM metrics") == [(4, 3)]
    assert _values(pg_url, "SELECT status FROM runs") == [("completed",)]


def test_a_locked_metrics_table_delays_rows_but_loses_none(pg_url: str) -> None:
    """Verify that rows wait while another session locks the metrics table (an index build)
    and arrive once it is released, without piling up server connections."""
    tracker = sqltrack.connect(pg_url, flush_interval=0.1, write_timeout=2.0)
    run = tracker.start_run("locked")
    run.log({"x": 0.0}, step=0)
    assert run.flush(10)
    locker = psycopg.connect(pg_url)
    locker.execute("LOCK TABLE metrics IN SHARE MODE")
    waiting = []
    try:
        with pytest.warns(SQLTrackWarning, match="lock"):
            for step in range(1, 50):
                run.log({"x": float(step)}, step=step)
            for _ in range(8):
                time.sleep(0.5)
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    (count,) = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'sqltrack' AND wait_event_type = 'Lock'"
                    ).fetchone()  # type: ignore[misc]
                waiting.append(count)
            locker.rollback()
            run.finish()
    finally:
        locker.close()
    assert max(waiting) <= 1, waiting  # one waiting statement at a time, none left behind
    assert _values(pg_url, "SELECT count(*), max(x) FROM metrics") == [(50, 49.0)]
    tracker.close()


def test_an_unwritable_spool_directory_never_blocks_training(
    pg_url: str, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that a spool directory that cannot be made warns, keeps rows in memory, and
    flush() still returns; the rows arrive when the database is back."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("SQLTRACK_SPOOL_DIR", str(blocker / "spool"))
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1)
    run = tracker.start_run("no-spool")
    proxy.cut()
    with pytest.warns(SQLTrackWarning) as seen:
        for step in range(20):
            run.log({"x": float(step)}, step=step)
        assert _returns_soon(run.flush) is False
        proxy.restore()
        run.finish()
    assert any("cannot write the spool" in str(w.message) for w in seen)
    assert _values(pg_url, "SELECT count(*) FROM metrics") == [(20,)]
    tracker.close()


@pytest.mark.parametrize("route", ["replay", "sync"])
def test_a_checkpoint_deleted_while_down_is_marked_removed(
    pg_url: str, proxy: FaultProxy, route: str
) -> None:
    """Verify a checkpoint registered before an outage and deleted during it (save_top_k)
    gets removed_at once the data arrives, replayed in-process or sent by sync."""
    timeout = 0.5 if route == "sync" else 60.0
    tracker = sqltrack.connect(proxy.url(pg_url), flush_interval=0.1, finish_timeout=timeout)
    run = tracker.start_run("removals")
    run.register_checkpoint("/ckpt/a.pt", None, step=1)
    run.register_checkpoint("/ckpt/b.pt", None, step=2)
    assert run.flush()
    proxy.cut()
    with pytest.warns(SQLTrackWarning):
        run.log({"loss": 1.0}, step=3)
        run.checkpoint_removed("/ckpt/a.pt")
        if route == "replay":
            run.flush()  # reaches the spool
            proxy.restore()
        run.finish()
    if route == "sync":
        proxy.restore()
        offline.sync_spools()
    rows = _values(pg_url, "SELECT path, removed_at IS NOT NULL FROM checkpoints ORDER BY id")
    assert rows == [("/ckpt/a.pt", True), ("/ckpt/b.pt", False)]
    assert offline.sync_spools() == []
    tracker.close()
