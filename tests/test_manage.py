"""Managing experiments and runs: list, rename, move, delete (API and CLI), `run.name = ...`,
and what an unknown run may have meant; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _proxy import FaultProxy
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, NotFoundError, RunStateError
from sqltrack_core._backends.dialect import PostgresDialect, SQLiteDialect
from sqltrack_core._manage import EXPERIMENT_COLUMNS, Deleted, experiments_query
from sqltrack_core.cli import cli
from sqltrack_core.cli import experiments as cli_experiments
from sqltrack_core.errors import SQLTrackWarning

TABLES = ("experiments", "runs", "metrics", "run_links", "checkpoints", "tensor_fingerprints")


def count(tracker: sqltrack.Tracker, table: str) -> int:
    return int(tracker.query(f"SELECT COUNT(*) AS n FROM {table}")["n"].iloc[0])


def counts(tracker: sqltrack.Tracker) -> dict[str, int]:
    return {table: count(tracker, table) for table in TABLES}


def stored(tracker: sqltrack.Tracker, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(tracker.query(sql, list(params)).itertuples(index=False, name=None))


def weights(seed: int) -> dict[str, Any]:
    """A state dict whose tensors are big and varied enough to be fingerprinted."""
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((8, 8)), "b": rng.standard_normal(32)}


def populate(tracker: sqltrack.Tracker, tmp_path: Path) -> dict[str, sqltrack.Run]:
    """Two experiments: 'doomed' (two runs with metrics, checkpoints, a link between them and
    one to the other experiment) and 'kept' (one run, linked from 'doomed')."""
    with tracker.start_run("kept", name="base") as base:
        base.log({"loss": 1.0}, step=0)
        base.register_checkpoint(tmp_path / "base.pt", weights(0), step=0)
    with tracker.start_run("doomed", name="first") as first:
        first.link("initialized_from", base)
        for step in range(5):
            first.log({"loss": 1.0 / (step + 1)}, step=step)
        first.register_checkpoint(tmp_path / "first.pt", weights(1), step=4)
    with tracker.start_run("doomed", name="second") as second:
        second.link("finetuned_from", first)
        second.log({"loss": 0.5}, step=0)
        second.register_checkpoint(tmp_path / "second.pt", weights(2), step=0)
    return {"base": base, "first": first, "second": second}


def make_crashed(tracker: sqltrack.Tracker, run_id: int) -> None:
    """Make run `run_id` look like one whose process died an hour ago."""
    b = tracker.backend
    b.execute(
        b.sql("UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? WHERE id = ?"),
        (b.timestamp(time.time() - 3600), run_id),
    )


# -- experiments() ---------------------------------------------------------------------------


def test_experiments_lists_runs_by_status_and_activity(tracker: sqltrack.Tracker) -> None:
    """Verify that experiments() gives one row per experiment, in creation order, with its
    runs by status (a stale heartbeat counting as crashed), first start and last activity,
    and an experiment without runs with zero counts and no times."""
    with tracker.start_run("mnist") as done:
        pass
    tracker.start_run("mnist").finish("failed")
    tracker.start_run("mnist").finish("cancelled")
    with tracker.start_run("mnist") as dead:
        pass
    make_crashed(tracker, dead.id)  # type: ignore[arg-type]
    live = tracker.start_run("cifar")
    with tracker.start_run("empty") as gone:
        pass
    tracker.delete_run(gone)
    try:
        df = tracker.experiments()
        assert list(df.columns) == list(EXPERIMENT_COLUMNS)
        assert list(df["name"]) == ["mnist", "cifar", "empty"]
        assert list(df["id"]) == sorted(df["id"])
        by_name = df.set_index("name")
        assert by_name.loc["mnist", ["runs", "running", "crashed", "completed"]].tolist() == [
            4,
            0,
            1,
            1,
        ]
        assert by_name.loc["mnist", ["failed", "cancelled"]].tolist() == [1, 1]
        assert by_name.loc["cifar", ["runs", "running", "crashed"]].tolist() == [1, 1, 0]
        assert by_name.loc["empty", list(EXPERIMENT_COLUMNS[2:8])].tolist() == [0] * 6
        assert pd.isna(by_name.loc["empty", "first_started"])
        assert pd.isna(by_name.loc["empty", "last_activity"])

        runs = tracker.runs("mnist")
        assert by_name.loc["mnist", "first_started"] == runs["started_at"].min()
        latest = max(runs[c].max() for c in ("started_at", "ended_at", "heartbeat_at"))
        assert by_name.loc["mnist", "last_activity"] == latest
        assert str(df["last_activity"].dtype) == "datetime64[us, UTC]"
        assert done.id in set(runs["id"])
    finally:
        live.finish()


def test_experiments_of_an_empty_database(tracker: sqltrack.Tracker) -> None:
    """Verify that a database without experiments lists none, with the usual columns."""
    df = tracker.experiments()
    assert df.empty and list(df.columns) == list(EXPERIMENT_COLUMNS)


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PostgresDialect()], ids=str)
def test_experiments_query_binds_every_placeholder(dialect: Any) -> None:
    """Verify that the experiments query has one bound param per placeholder (the stale
    time, once for running and once for crashed) and reads times as epoch integers."""
    sql, params = experiments_query(dialect, "STALE")
    assert sql.count("?") == len(params) == 2
    assert params == ["STALE", "STALE"]
    assert dialect.epoch_sql("MAX(r.heartbeat_at)") in sql
    assert "LEFT JOIN runs" in sql


# -- rename and move -------------------------------------------------------------------------


def test_rename_experiment_keeps_its_id_and_runs(tracker: sqltrack.Tracker) -> None:
    """Verify that renaming an experiment keeps its id and its runs, the old name is gone, and
    a run of this process still running in it goes on there."""
    with tracker.start_run("mnist", name="a") as finished:
        finished.log({"x": 1})
    live = tracker.start_run("mnist", name="b")
    before = tracker.experiments().set_index("name")["id"].to_dict()
    tracker.rename_experiment("mnist", "mnist-v1")
    after = tracker.experiments().set_index("name")["id"].to_dict()
    assert after == {"mnist-v1": before["mnist"]}
    assert live.experiment == "mnist-v1"
    live.log({"x": 2}, step=0)
    live.finish()
    df = tracker.runs("mnist-v1")
    assert sorted(df["id"]) == sorted([finished.id, live.id])
    assert set(df["experiment"]) == {"mnist-v1"}
    with pytest.raises(NotFoundError, match="no experiment 'mnist'; did you mean 'mnist-v1'"):
        tracker.rename_experiment("mnist", "x")
    tracker.rename_experiment("mnist-v1", "mnist-v1")  # to itself: nothing to do
    assert tracker.experiments()["name"].tolist() == ["mnist-v1"]


def test_rename_experiment_to_a_taken_name_is_refused(tracker: sqltrack.Tracker) -> None:
    """Verify that renaming to the name of another experiment raises ConfigurationError naming
    it, and an invalid new name is refused, both changing nothing."""
    tracker.start_run("a").finish()
    tracker.start_run("b").finish()
    with pytest.raises(ConfigurationError, match="experiment 'b' exists already"):
        tracker.rename_experiment("a", "b")
    for bad in ("", "   ", None, 3, "x\x00"):
        with pytest.raises(ConfigurationError, match="experiment"):
            tracker.rename_experiment("a", bad)  # type: ignore[arg-type]
    assert tracker.experiments()["name"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "ref",
    [lambda run: run, lambda run: run.id, lambda run: str(run.id), lambda run: str(run.uuid)],
    ids=["run", "id", "id-text", "uuid"],
)
def test_rename_run_by_reference(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that rename_run finds the run by Run, id or UUID, renames only it, and None
    clears the name."""
    with tracker.start_run("e", name="old") as run:
        pass
    with tracker.start_run("e", name="other") as other:
        pass
    tracker.rename_run(ref(run), "new")
    assert stored(tracker, "SELECT id, name FROM runs ORDER BY id") == [
        (run.id, "new"),
        (other.id, "other"),
    ]
    tracker.rename_run(ref(run), None)
    assert stored(tracker, "SELECT name FROM runs WHERE id = ?", run.id) == [(None,)]


def test_rename_run_refuses_bad_names_and_unknown_runs(tracker: sqltrack.Tracker) -> None:
    """Verify that rename_run refuses a name that is not a str, and an unknown run, saying so."""
    with tracker.start_run("e", name="keep") as run:
        pass
    with pytest.raises(ConfigurationError, match="run name 5 is a int; expected a str"):
        tracker.rename_run(run.id, 5)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match=f"no run 987654 in .*did you mean run {run.id}"):
        tracker.rename_run(987654, "x")
    assert stored(tracker, "SELECT name FROM runs") == [("keep",)]


def test_rename_run_of_a_live_run_goes_through_it(tracker: sqltrack.Tracker) -> None:
    """Verify that renaming, by id, a run still running in this process renames the Run too,
    so a later write of the Run keeps the new name."""
    run = tracker.start_run("e", name="before")
    tracker.rename_run(run.id, "after")  # type: ignore[arg-type]
    assert run.name == "after"
    run.log({"x": 1.0}, step=0)
    run.finish()
    assert stored(tracker, "SELECT name FROM runs") == [("after",)]


def test_move_run_keeps_the_run_and_creates_the_experiment(tracker: sqltrack.Tracker) -> None:
    """Verify that move_run moves a run (its id, metrics and name unchanged) into an existing
    experiment or a new one, and updates a live Run's experiment."""
    with tracker.start_run("a", name="r") as run:
        run.log({"x": 1.0}, step=0)
    with tracker.start_run("b") as other:
        pass
    tracker.move_run(str(run.uuid), "b")
    assert sorted(tracker.runs("b")["id"]) == sorted([run.id, other.id])
    tracker.move_run(run, "c")
    assert tracker.runs("c")[["id", "name"]].values.tolist() == [[run.id, "r"]]
    assert tracker.metrics(run.id)["x"].tolist() == [1.0]  # type: ignore[arg-type]
    live = tracker.start_run("a")
    tracker.move_run(live, "c")
    assert live.experiment == "c"
    live.finish()
    assert len(tracker.runs("c")) == 2
    with pytest.raises(ConfigurationError, match="experiment"):
        tracker.move_run(run, "")


# -- delete ----------------------------------------------------------------------------------


def test_delete_experiment_with_runs_deletes_everything_under_it(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that delete_experiment(runs=True) deletes the experiment, its runs and their
    metric rows, links (both ways), checkpoints and fingerprints, leaves the other experiment
    whole, and returns those counts; dry_run counts the same and deletes nothing."""
    runs = populate(tracker, tmp_path)
    before = counts(tracker)
    assert before == {
        "experiments": 2,
        "runs": 3,
        "metrics": 7,
        "run_links": 2,
        "checkpoints": 3,
        "tensor_fingerprints": 6,
    }
    expected = Deleted(experiments=1, runs=2, metric_rows=6, links=2, checkpoints=2, fingerprints=4)
    assert tracker.delete_experiment("doomed", runs=True, dry_run=True) == expected
    assert counts(tracker) == before
    assert tracker.delete_experiment("doomed", runs=True) == expected
    assert counts(tracker) == {
        "experiments": 1,
        "runs": 1,
        "metrics": 1,
        "run_links": 0,
        "checkpoints": 1,
        "tensor_fingerprints": 2,
    }
    assert stored(tracker, "SELECT id FROM runs") == [(runs["base"].id,)]
    assert stored(tracker, "SELECT run_id FROM checkpoints") == [(runs["base"].id,)]
    assert tracker.experiments()["name"].tolist() == ["kept"]
    with pytest.raises(NotFoundError, match=r"no experiment 'doomed'; known: 'kept'$"):
        tracker.delete_experiment("doomed", runs=True)


def test_delete_experiment_with_runs_needs_runs_true(tracker: sqltrack.Tracker) -> None:
    """Verify that deleting an experiment that still has runs without runs=True raises
    ConfigurationError and deletes nothing, while an empty one goes without it."""
    with tracker.start_run("busy") as run:
        run.log({"x": 1})
    with tracker.start_run("idle") as gone:
        pass
    tracker.delete_run(gone)
    with pytest.raises(ConfigurationError, match=r"experiment 'busy' still has 1 run\(s\)"):
        tracker.delete_experiment("busy")
    assert count(tracker, "runs") == 1 and count(tracker, "metrics") == 1
    assert tracker.delete_experiment("idle") == Deleted(experiments=1)
    assert tracker.experiments()["name"].tolist() == ["busy"]


def test_delete_experiment_refuses_a_run_running_here(tracker: sqltrack.Tracker) -> None:
    """Verify that an experiment with a run still running in this process is not deleted,
    while a run running elsewhere (a fresh heartbeat) is deleted and counted as live."""
    live = tracker.start_run("busy")
    with pytest.raises(RunStateError, match=f"run {live.id} is still running in this process"):
        tracker.delete_experiment("busy", runs=True)
    live.finish()
    b = tracker.backend
    b.execute(
        b.sql("UPDATE runs SET status = 'running', heartbeat_at = ? WHERE id = ?"),
        (b.timestamp(time.time()), live.id),
    )
    deleted = tracker.delete_experiment("busy", runs=True)
    assert (deleted.runs, deleted.live_runs) == (1, 1)
    assert "1 run (1 still running)" in str(deleted)
    assert count(tracker, "runs") == 0


def test_delete_runs_resolves_all_first(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that delete_runs deletes runs given by id, UUID or Run with what hangs on them
    and keeps their experiment; an unknown run among them deletes nothing."""
    runs = populate(tracker, tmp_path)
    before = counts(tracker)
    with pytest.raises(NotFoundError):
        tracker.delete_runs([runs["first"].id, 987654])  # type: ignore[list-item]
    assert counts(tracker) == before
    deleted = tracker.delete_runs([str(runs["first"].uuid), runs["second"], runs["first"].id])  # type: ignore[list-item]
    assert deleted == Deleted(runs=2, metric_rows=6, links=2, checkpoints=2, fingerprints=4)
    assert str(deleted) == "2 runs, 6 metric rows, 2 links, 2 checkpoints, 4 tensor fingerprints"
    assert counts(tracker)["experiments"] == 2
    assert stored(tracker, "SELECT id FROM runs") == [(runs["base"].id,)]
    assert tracker.delete_runs(str(runs["base"].id)) == Deleted(
        runs=1, metric_rows=1, checkpoints=1, fingerprints=2
    )
    running = tracker.start_run("kept")
    with pytest.raises(RunStateError, match="still running in this process"):
        tracker.delete_runs(running)
    running.finish()


# -- run.name --------------------------------------------------------------------------------


def test_run_name_is_saved_while_running_and_after_the_end(tracker: sqltrack.Tracker) -> None:
    """Verify that assigning run.name writes it (after what was logged before), reads back,
    and still works once the run has finished, leaving no writer thread behind."""
    run = tracker.start_run("named", name="first")
    run.log({"x": 1.0}, step=0)
    run.name = "second"
    assert run.name == "second"
    assert stored(tracker, "SELECT name FROM runs") == [("second",)]
    assert tracker.metrics(run)["x"].tolist() == [1.0]  # written before the name
    run.finish()
    run.name = "third"
    assert run.name == "third"
    assert tracker.runs()["name"].tolist() == ["third"]
    assert not any(t.name.startswith("sqltrack-writer-named/") for t in threading.enumerate())
    run.name = None
    assert stored(tracker, "SELECT name FROM runs") == [(None,)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [(5, "run name 5 is a int; expected a str"), ("a\x00b", "run name"), (["x"], "run name")],
    ids=["int", "nul", "list"],
)
def test_run_name_is_validated(tracker: sqltrack.Tracker, bad: Any, message: str) -> None:
    """Verify that assigning a name start_run would refuse raises ConfigurationError and
    changes nothing."""
    with tracker.start_run("named", name="kept") as run:
        with pytest.raises(ConfigurationError, match=message):
            run.name = bad
        assert run.name == "kept"
    assert stored(tracker, "SELECT name FROM runs") == [("kept",)]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_run_name_set_while_the_database_is_away(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Verify that a name assigned while the database is away does not wait for it and
    reaches it, with the rows, once it is back."""
    away: Callable[[], object]
    back: Callable[[], object]
    if dialect == "sqlite":  # a database whose folder appears later
        folder = tmp_path / "later"
        url = direct = f"sqlite:///{folder}/sqltrack.db"
        away, back = (lambda: None), folder.mkdir
    else:
        pg_url = request.getfixturevalue("pg_url")
        proxy: FaultProxy = request.getfixturevalue("proxy")
        url, direct, away, back = proxy.url(pg_url), pg_url, proxy.cut, proxy.restore
    with pytest.warns(SQLTrackWarning) as seen:
        tracker = sqltrack.connect(url, flush_interval=0.1)
        away()
        run = tracker.start_run("away", name="before")
        run.log({"x": 1.0}, step=0)
        started = time.monotonic()
        run.name = "during"
        assert time.monotonic() - started < 2.0
        assert run.name == "during"
        run.log({"x": 2.0}, step=1)
        time.sleep(0.3)
        back()
        run.finish()
    said = [str(w.message) for w in seen]
    assert any("cannot reach" in m for m in said) and any("database is back" in m for m in said)
    tracker.close()
    with sqltrack.connect(direct, offline_ok=False) as reader:
        assert stored(reader, "SELECT name FROM runs WHERE id = ?", run.id) == [("during",)]
        assert reader.metrics(run.id)["x"].tolist() == [1.0, 2.0]  # type: ignore[arg-type]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of this machine's PostgreSQL."""
    with FaultProxy() as p:
        yield p


# -- unknown runs ----------------------------------------------------------------------------


def test_unknown_runs_say_what_they_may_mean(tracker: sqltrack.Tracker) -> None:
    """Verify that an unknown id names the ids around it, a UUID prefix the runs it starts,
    a full unknown UUID sharing a run's first digits that run, and a run's name its id."""
    with tracker.start_run("e", name="alpha") as first:
        pass
    with tracker.start_run("e") as second:
        pass
    with tracker.start_run("e") as third:
        pass
    tracker.delete_runs(second)  # a gap between two runs' ids
    text = str(first.uuid)
    cases: list[tuple[Any, type[Exception], str]] = [
        (
            second.id,
            NotFoundError,
            f"no run {second.id} in .*; did you mean run {first.id} or {third.id}\\?",
        ),
        (str(10**6), NotFoundError, f"did you mean run {third.id}\\?"),
        (
            text[:6],
            NotFoundError,
            f"no run '{text[:6]}' in .*did you mean '{text}' \\(run {first.id}\\)",
        ),
        (text[:6].upper(), NotFoundError, f"did you mean '{text}'"),
        (
            text[:8] + "-0000-4000-8000-000000000000",
            NotFoundError,
            f"no run with UUID .*did you mean '{text}'",
        ),
        ("fedcba987", NotFoundError, "no run's UUID starts with it"),
        (
            "alpha",
            ConfigurationError,
            f"neither an integer id nor a UUID; run {first.id} is named 'alpha'",
        ),
        ("nobody", ConfigurationError, "^run 'nobody' is neither an integer id nor a UUID$"),
    ]
    if text[:6].upper() == text[:6]:  # all digits: nothing upper-case to try
        cases.pop(3)
    for ref, error, message in cases:
        with pytest.raises(error, match=message):
            tracker.run_id(ref)
    with pytest.raises(NotFoundError, match=f"did you mean '{text}'"):
        tracker.run_uuid(text[:6])  # the same for the lookups that need no database


def test_an_unknown_run_in_an_empty_database(tracker: sqltrack.Tracker) -> None:
    """Verify that an unknown id in a database without runs says it has none."""
    with pytest.raises(NotFoundError, match=r"no run 5 in .*; it has no runs$"):
        tracker.run_id(5)


# -- the command line ------------------------------------------------------------------------

COMMANDS = [
    ["experiments"],
    ["experiments", "rename"],
    ["experiments", "delete"],
    ["rename"],
    ["move"],
    ["delete"],
]


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands see a terminal on stdin (CliRunner's is a pipe), so they ask."""
    monkeypatch.setattr(cli_experiments, "stdin_is_terminal", lambda: True)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str]) -> None:
    """Verify that each management command answers --help."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: ")


def test_cli_lists_experiments(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `sqltrack experiments` prints each experiment with its runs by status in a
    table, and every column in CSV and JSON."""
    tracker.start_run("mnist").finish()
    tracker.start_run("mnist").finish()
    tracker.start_run("mnist").finish("failed")
    tracker.start_run("cifar").finish("cancelled")
    table = invoke("experiments", "--url", db_url)
    assert table.exit_code == 0, table.output
    assert "3 │ 2 completed, 1 failed" in table.stdout
    assert "1 │ 1 cancelled" in table.stdout
    csv = invoke("experiments", "--url", db_url, "--format", "csv")
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert list(frame.columns) == list(EXPERIMENT_COLUMNS)
    assert frame[["name", "runs", "completed", "failed"]].values.tolist() == [
        ["mnist", 3, 2, 1],
        ["cifar", 1, 0, 0],
    ]
    records = pd.read_json(
        io.StringIO(invoke("experiments", "--url", db_url, "--format", "json").stdout)
    )
    assert records["cancelled"].tolist() == [0, 1]


def test_cli_renames_experiments_and_runs(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `experiments rename` and `rename` rename, keep ids, and that a taken or
    unknown name is a one-line error (the --url of the group is the subcommand's)."""
    with tracker.start_run("mnist", name="a") as run:
        pass
    tracker.start_run("other").finish()
    ident = tracker.experiments()["id"].iloc[0]
    done = invoke("experiments", "--url", db_url, "rename", "mnist", "mnist-v1")
    assert done.exit_code == 0 and "renamed experiment 'mnist' to 'mnist-v1'" in done.stdout
    assert tracker.experiments()[["id", "name"]].values.tolist()[0] == [ident, "mnist-v1"]
    assert_one_line_error(
        invoke("experiments", "rename", "--url", db_url, "mnist-v1", "other"),
        "experiment 'other' exists already",
    )
    assert_one_line_error(
        invoke("experiments", "rename", "--url", db_url, "mnist", "x"),
        "no experiment 'mnist'; did you mean 'mnist-v1'?",
    )
    renamed = invoke("rename", "--url", db_url, str(run.uuid), "b")
    assert renamed.exit_code == 0 and f"renamed run {run.id} to 'b'" in renamed.stdout
    assert stored(tracker, "SELECT name FROM runs WHERE id = ?", run.id) == [("b",)]
    assert_one_line_error(invoke("rename", "--url", db_url, "4242", "b"), "no run '4242'")


def test_cli_moves_runs(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `move RUN... EXPERIMENT` moves every run, and an unknown one moves none."""
    ids = []
    for _ in range(3):
        with tracker.start_run("a") as run:
            ids.append(run.id)
    failed = invoke("move", "--url", db_url, str(ids[0]), "999999", "b")
    assert_one_line_error(failed, "no run '999999'")
    assert len(tracker.runs("a")) == 3
    moved = invoke("move", "--url", db_url, str(ids[0]), str(ids[1]), "b")
    assert (
        moved.exit_code == 0 and f"moved runs {ids[0]}, {ids[1]} to experiment 'b'" in moved.stdout
    )
    assert sorted(tracker.runs("b")["id"]) == ids[:2]


def test_cli_delete_asks_on_a_terminal(
    tracker: sqltrack.Tracker, db_url: str, tmp_path: Path, terminal: None
) -> None:
    """Verify that `delete RUN...` asks first, deletes nothing on "n", and on "y" deletes and
    says how much."""
    runs = populate(tracker, tmp_path)
    before = counts(tracker)
    ids = [str(runs["first"].id), str(runs["second"].uuid)]
    declined = invoke("delete", "--url", db_url, *ids, input="n\n")
    assert declined.exit_code == 1
    assert "Delete runs" in declined.stdout and "6 metric rows" in declined.stdout
    assert "nothing deleted" in declined.stderr
    assert counts(tracker) == before
    accepted = invoke("delete", "--url", db_url, *ids, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "deleted 2 runs, 6 metric rows, 2 links, 2 checkpoints, 4 tensor fingerprints" in (
        accepted.stdout
    )
    assert counts(tracker)["runs"] == 1


def test_cli_delete_refuses_without_a_terminal(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that without a terminal on stdin `delete` refuses unless --yes, and that
    --dry-run says what it would delete and deletes nothing."""
    with tracker.start_run("e") as run:
        run.log({"x": 1})
    refused = invoke("delete", "--url", db_url, str(run.id))
    assert_one_line_error(refused, "stdin is not a terminal")
    dry = invoke("delete", "--url", db_url, str(run.id), "--dry-run")
    assert dry.exit_code == 0 and f"would delete 1 run, 1 metric row (run {run.id})" in dry.stdout
    assert count(tracker, "runs") == 1
    done = invoke("delete", "--url", db_url, str(run.id), "--yes")
    assert done.exit_code == 0 and "deleted 1 run, 1 metric row" in done.stdout
    assert count(tracker, "runs") == 0 and count(tracker, "metrics") == 0


def test_cli_delete_experiment(
    tracker: sqltrack.Tracker, db_url: str, tmp_path: Path, terminal: None
) -> None:
    """Verify that `experiments delete` needs --runs for an experiment with runs, asks, and
    deletes the experiment with everything under it, saying how much."""
    populate(tracker, tmp_path)
    before = counts(tracker)
    assert_one_line_error(
        invoke("experiments", "delete", "--url", db_url, "doomed"),
        "experiment 'doomed' still has 2 run(s); add --runs",
    )
    assert_one_line_error(
        invoke("experiments", "delete", "--url", db_url, "domed", "--runs"),
        "no experiment 'domed'; did you mean 'doomed'?",
    )
    no = invoke("experiments", "delete", "--url", db_url, "doomed", "--runs", input="n\n")
    assert no.exit_code == 1 and "Delete experiment 'doomed'" in no.stdout
    assert counts(tracker) == before
    yes = invoke("experiments", "delete", "--url", db_url, "doomed", "--runs", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "deleted 1 experiment, 2 runs, 6 metric rows, 2 links" in yes.stdout
    assert counts(tracker)["runs"] == 1 and counts(tracker)["experiments"] == 1


def test_cli_delete_experiment_without_a_terminal(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `experiments delete` refuses without --yes when stdin is not a terminal,
    and deletes with it."""
    tracker.start_run("scratch").finish()
    assert_one_line_error(
        invoke("experiments", "delete", "--url", db_url, "scratch", "--runs"),
        "stdin is not a terminal",
    )
    done = invoke("experiments", "delete", "--url", db_url, "scratch", "--runs", "--yes")
    assert done.exit_code == 0 and "deleted 1 experiment, 1 run" in done.stdout
    assert tracker.experiments().empty


def test_delete_asks_in_a_real_terminal(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `sqltrack delete` run in a pseudo-terminal asks, and deletes on "y"."""
    with tracker.start_run("e") as run:
        run.log({"x": 1})
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqltrack_core", "delete", "--url", db_url, str(run.id)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    os.close(follower)
    try:
        seen = _read_until(leader, b"[y/N]:")
        assert b"Delete run " + str(run.id).encode() in seen
        os.write(leader, b"y\n")
        seen = _read_until(leader, b"deleted")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(leader)
    assert count(tracker, "runs") == 0


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    seen, end = b"", time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        assert ready, f"no {marker!r} in {seen!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # the other end closed
            break
    assert marker in seen, seen
    return seen
