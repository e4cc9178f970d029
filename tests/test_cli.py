"""The ``sqltrack`` command line, run in-process with click's CliRunner on both backends."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core.cli import cli

COMMANDS = [
    "migrate",
    "runs",
    "show",
    "metrics",
    "lineage",
    "sql",
    "sync",
    "views",
    "experiments",
    "rename",
    "move",
    "delete",
    "export",
]

#: run name -> val/acc per step; binary fractions, so every backend prints them exactly
HISTORIES = {
    "alpha": [0.5, 0.8125, 0.75],
    "beta": [0.625, 0.9375],
    "gamma": [0.4375],
}
MAXIMA = {name: max(values) for name, values in HISTORIES.items()}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def log_runs(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """Log HISTORIES as finished runs of experiment 'mnist'."""
    runs = {}
    for i, (name, values) in enumerate(HISTORIES.items()):
        run = tracker.start_run(
            "mnist", name=name, params={"lr": 0.001 * (i + 1), "optimizer": "adamw"}
        )
        for step, value in enumerate(values):
            run.log({"val/acc": value, "train/loss": 1.0 - value}, step=step)
        run.finish()
        runs[name] = run
    return runs


def assert_one_line_error(result: Result) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["sqltrack", *COMMANDS])
def test_help(command: list[str]) -> None:
    """Verify that the group and every command answer --help with exit status 0."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    if not command:
        for name in COMMANDS:
            assert name in result.stdout


def test_help_covers_every_command() -> None:
    """Verify that the --help test above lists every command the group has."""
    assert sorted(cli.commands) == sorted(COMMANDS)


def test_version() -> None:
    """Verify that --version prints the package version."""
    result = invoke("--version")
    assert result.exit_code == 0
    assert sqltrack.__version__ in result.stdout


def test_runs_table(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `runs --metric val/acc:max` shows each run's maximum in the table."""
    log_runs(tracker)
    result = invoke("runs", "--url", db_url, "--metric", "val/acc:max")
    assert result.exit_code == 0, result.output
    assert "val/acc:max" in result.stdout
    # the default table shows the params that vary, and names those equal in every run
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    assert "lr" in [cell.strip() for cell in header.split("┃")]
    assert "same in every run: optimizer=adamw" in result.stdout
    for name, best in MAXIMA.items():
        [line] = [ln for ln in result.stdout.splitlines() if f" {name} " in ln]
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert str(best) in cells
        assert "completed" in cells


def test_runs_csv(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `runs --format csv` gives one parsable row per run with the right maxima."""
    log_runs(tracker)
    result = invoke("runs", "--url", db_url, "-m", "val/acc:max", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["name"]: float(row["val/acc:max"]) for row in rows} == MAXIMA
    assert {row["experiment"] for row in rows} == {"mnist"}


def test_runs_json(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `runs --format json` gives one record per run with the right maxima."""
    log_runs(tracker)
    result = invoke(
        "runs", "--url", db_url, "-m", "val/acc:max", "-m", "val/acc:count", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert {r["name"]: r["val/acc:max"] for r in records} == MAXIMA
    assert {r["name"]: r["val/acc:count"] for r in records} == {
        name: len(values) for name, values in HISTORIES.items()
    }


def test_runs_filters_by_experiment(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `runs --experiment` lists only that experiment's runs."""
    log_runs(tracker)
    tracker.start_run("other", name="delta").finish()
    result = invoke("runs", "--url", db_url, "-e", "other", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == ["delta"]


CLI_ORDERS = [
    # (arguments, names expected, in order)
    (["--order-by", "-val/acc:max"], ["beta", "alpha", "gamma"]),
    (["--order-by", "val/acc:max", "--limit", "2"], ["gamma", "alpha"]),
    (["--order-by=-val/acc:count", "--order-by", "name"], ["alpha", "beta", "gamma"]),
    (["--order-by", "-name", "--limit", "1"], ["gamma"]),
    (["--limit", "0"], []),
]


@pytest.mark.parametrize(("args", "names"), CLI_ORDERS, ids=[" ".join(a) for a, _ in CLI_ORDERS])
def test_runs_order_by_and_limit(
    tracker: sqltrack.Tracker, db_url: str, args: list[str], names: list[str]
) -> None:
    """Verify that `runs --order-by [-]FIELD --limit N` sorts and cuts the list."""
    log_runs(tracker)
    result = invoke("runs", "--url", db_url, "-m", "val/acc:max", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["name"] for r in records] == names
    assert all(r["val/acc:max"] == MAXIMA[r["name"]] for r in records)


def test_runs_order_by_table(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that the table of `runs --order-by -val/acc:max` lists the best run first."""
    log_runs(tracker)
    result = invoke("runs", "--url", db_url, "-m", "val/acc:max", "--order-by", "-val/acc:max")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if any(f" {n} " in ln for n in HISTORIES)]
    assert [n for ln in lines for n in HISTORIES if f" {n} " in ln] == ["beta", "alpha", "gamma"]


@pytest.mark.parametrize("by", ["id", "uuid"])
def test_show(tracker: sqltrack.Tracker, db_url: str, by: str) -> None:
    """Verify that `show RUN`, by id or UUID, prints the run's params and metric keys."""
    run = log_runs(tracker)["beta"]
    result = invoke("show", "--url", db_url, str(getattr(run, by)))
    assert result.exit_code == 0, result.output
    for text in (str(run.uuid), "beta", "optimizer", "adamw", "val/acc", "train/loss", "0.9375"):
        assert text in result.stdout


def test_show_json(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `show --format json` gives the run's params and metric summary."""
    run = log_runs(tracker)["alpha"]
    result = invoke("show", "--url", db_url, str(run.id), "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["id"] == run.id
    assert info["params.optimizer"] == "adamw"
    assert info["metrics"]["val/acc"]["max"] == MAXIMA["alpha"]
    assert info["metrics"]["val/acc"]["count"] == len(HISTORIES["alpha"])


def test_show_json_keeps_value_types(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `show --format json` writes ints and bools as JSON numbers and booleans."""
    run = tracker.start_run("types", name="running")
    run.log({"epoch": 1, "done": False, "loss": 0.5}, step=0)
    run.log({"epoch": 2, "done": True, "loss": 0.25}, step=1)
    assert run.flush(timeout=30)
    result = invoke("show", "--url", db_url, str(run.id), "--format", "json")
    run.finish()
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["metrics"]["epoch"]["last"] == 2
    assert type(info["metrics"]["epoch"]["last"]) is int
    assert info["metrics"]["done"]["last"] is True
    assert info["metrics"]["loss"]["last"] == 0.25
    assert info["status"] == "running"
    assert info["ended_at"] is None


def test_metrics(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `metrics RUN --key val/acc` prints that key's history, one row per step."""
    run = log_runs(tracker)["alpha"]
    result = invoke("metrics", "--url", db_url, str(run.id), "--key", "val/acc", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert [float(r["val/acc"]) for r in rows] == HISTORIES["alpha"]
    assert "train/loss" not in rows[0]


def test_csv_times_are_iso_utc(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that CSV output writes times as ISO-8601 UTC text, and a missing time as empty."""
    run = log_runs(tracker)["alpha"]
    running = tracker.start_run("mnist", name="open")
    rows = list(
        csv.DictReader(
            io.StringIO(invoke("metrics", "--url", db_url, str(run.id), "--format", "csv").stdout)
        )
    )
    stamps = [datetime.fromisoformat(r["logged_at"]) for r in rows]
    assert all(r["logged_at"].endswith("Z") and "T" in r["logged_at"] for r in rows)
    assert all(s.utcoffset() == timedelta(0) for s in stamps)
    assert abs(stamps[0].timestamp() - time.time()) < 600
    listed = invoke("runs", "--url", db_url, "--format", "csv")
    by_name = {r["name"]: r for r in csv.DictReader(io.StringIO(listed.stdout))}
    assert by_name["open"]["ended_at"] == ""
    assert by_name["alpha"]["ended_at"].endswith("Z")
    running.finish()


def test_metrics_table(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `metrics RUN` as a table shows every logged value of the run."""
    run = log_runs(tracker)["beta"]
    result = invoke("metrics", "--url", db_url, str(run.uuid))
    assert result.exit_code == 0, result.output
    assert "val/acc" in result.stdout and "train/loss" in result.stdout
    for value in HISTORIES["beta"]:
        assert str(value) in result.stdout


def test_lineage(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `lineage RUN` draws the runs it was linked to as a tree, with the link kind,
    and lists the raw links with --format json."""
    runs = log_runs(tracker)
    child = tracker.start_run("finetune", name="child")
    child.link("finetuned_from", runs["alpha"], evidence={"checkpoint": "best.pt"})
    child.finish()
    result = invoke("lineage", "--url", db_url, str(child.id), "--format", "json")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    assert record["relation"] == "ancestor"
    assert record["run_id"] == runs["alpha"].id
    assert record["kind"] == "finetuned_from"
    tree = invoke("lineage", "--url", db_url, str(runs["alpha"].id))
    assert tree.exit_code == 0, tree.output
    assert tree.stdout.splitlines()[2:] == [
        "  descendants:",
        f"    └─ run {child.id}  finetune/child  completed  finetuned_from run "
        f'{runs["alpha"].id}  (by hand: checkpoint="best.pt")',
    ]


def test_sql(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `sql` runs a statement and prints its result."""
    log_runs(tracker)
    result = invoke("sql", "--url", db_url, "SELECT count(*) AS n FROM runs", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": len(HISTORIES)}]
    table = invoke("sql", "--url", db_url, "SELECT count(*) AS n FROM runs")
    assert table.exit_code == 0, table.output
    assert str(len(HISTORIES)) in table.stdout


def test_migrate(db_url: str, tmp_path: Path) -> None:
    """Verify that `migrate --dir` creates the schema, applies user files, and is idempotent."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_notes.sql").write_text("CREATE TABLE my_notes (id INTEGER);\n")
    result = invoke("migrate", "--url", db_url, "--dir", str(directory))
    assert result.exit_code == 0, result.output
    assert "applied 0001_notes.sql" in result.stdout
    with sqltrack.connect(db_url, migrate=False) as tracker:
        assert len(tracker.query("SELECT * FROM my_notes")) == 0
        assert len(tracker.runs()) == 0
    again = invoke("migrate", "--url", db_url, "--dir", str(directory))
    assert again.exit_code == 0, again.output
    assert "(0 migration(s) applied)" in again.stdout


def test_url_from_environment(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that commands read the database URL from $SQLTRACK_URL."""
    log_runs(tracker)
    result = CliRunner(env={"SQLTRACK_URL": db_url}).invoke(
        cli, ["sql", "SELECT count(*) AS n FROM runs", "--format", "csv"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["n", str(len(HISTORIES))]


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--url", "mysql://bob:s3cret@localhost/db"],
        ["runs", "--url", "sqlite:///:memory:"],
        ["show", "999"],
        ["show", "not-a-run"],
        ["metrics", "999"],
        ["lineage", "999"],
        ["runs", "--metric", "val/acc:median"],
        ["runs", "--metric", "val/acc"],
        ["runs", "--order-by", "nope"],
        ["runs", "--order-by", "-val/acc:median"],
        ["sql", "SELECT * FROM no_such_table"],
        ["migrate", "--dir", "{tmp}/bad"],
    ],
    ids=[
        "bad-scheme",
        "memory-url",
        "unknown-run",
        "bad-run-ref",
        "metrics-unknown-run",
        "lineage-unknown-run",
        "bad-aggregation",
        "spec-without-aggregation",
        "unknown-order-column",
        "bad-order-aggregation",
        "bad-sql",
        "bad-migration-name",
    ],
)
def test_errors_are_one_line(db_url: str, tmp_path: Path, args: list[str]) -> None:
    """Verify that a failing command prints one error line, no traceback, and exits non-zero."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "notes.sql").write_text("SELECT 1;\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--url" not in args:
        args = [args[0], "--url", db_url, *args[1:]]
    result = invoke(*args)
    assert_one_line_error(result)
    assert "s3cret" not in result.output


def test_python_m() -> None:
    """Verify that `python -m sqltrack_core --help` runs the command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "sqltrack_core", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ")
    for name in COMMANDS:
        assert name in proc.stdout
