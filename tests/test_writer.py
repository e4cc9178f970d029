"""The background writer: widening, overflow to ``extra``, the column budget, and when it flushes."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _schema import RECORDED_TYPES, metric_columns, table_columns

import sqltrack_core as sqltrack
from sqltrack_core import SQLTrackWarning

WAIT_S = 30.0  # upper bound for the background writer to get rows in; never a timing assertion

FLOAT_TYPE = {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION"}
INT_TYPE = {"sqlite": "BIGINT", "postgresql": "BIGINT"}


def count_rows(tracker: sqltrack.Tracker) -> int:
    return int(tracker.query("SELECT count(*) FROM metrics").iloc[0, 0])


def wait_for_rows(tracker: sqltrack.Tracker, n: int) -> int:
    """Poll until at least `n` metric rows are in the database, or WAIT_S passes."""
    deadline = time.monotonic() + WAIT_S
    while (count := count_rows(tracker)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def cell(df: pd.DataFrame, step: int, key: str) -> Any:
    rows = df.loc[df["step"] == step, key]
    assert len(rows) == 1, f"step {step} has {len(rows)} rows"
    return rows.iloc[0]


def same(actual: Any, expected: Any) -> bool:
    """Equal and of the same kind (bool is not int); NaN equals NaN."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    if isinstance(expected, (dict, list, str)):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


# -- widening ---------------------------------------------------------------------------------

WIDEN = [
    # (id, second value, float column after two flushes, float column after one batch)
    ("fraction", 2.5, True, True),
    ("negative-fraction", -0.5, True, True),
    ("nan", math.nan, True, True),
    ("inf", math.inf, True, True),
    ("-inf", -math.inf, True, True),
    # an integral float keeps an existing int column; in the key's first batch it is a float
    ("integral-float", 3.0, False, True),
    ("int", 4, False, False),
]


@pytest.mark.parametrize("flush_between", [True, False], ids=["two-flushes", "one-batch"])
@pytest.mark.parametrize(
    ("second", "float_later", "float_at_once"),
    [w[1:] for w in WIDEN],
    ids=[w[0] for w in WIDEN],
)
def test_int_column_widens_for_fractional_float(
    tracker: sqltrack.Tracker,
    second: float,
    float_later: bool,
    float_at_once: bool,
    flush_between: bool,
) -> None:
    """Verify that an int column receiving a fractional or non-finite float becomes a float column."""
    with tracker.start_run("widen") as run:
        run.log({"x": 1, "y": 10}, step=0)
        if flush_between:
            assert run.flush(timeout=WAIT_S)
            assert metric_columns(tracker)["x"][1] == INT_TYPE[tracker.dialect]
        run.log({"x": second, "y": 11}, step=1)
        assert run.flush(timeout=WAIT_S)
        run.log({"x": 2}, step=2)  # an int into the widened column still works
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1, 2]
    assert cell(df, 0, "x") == 1
    assert same(float(cell(df, 1, "x")), float(second))
    assert cell(df, 2, "x") == 2
    column, sql_type = metric_columns(tracker)["x"]
    widened = float_later if flush_between else float_at_once
    expected = FLOAT_TYPE if widened else INT_TYPE
    assert sql_type == expected[tracker.dialect]
    if tracker.dialect == "postgresql":
        assert table_columns(tracker)[column] == expected["postgresql"].lower()
    assert metric_columns(tracker)["y"][1] == INT_TYPE[tracker.dialect]  # others untouched
    assert tracker.query("SELECT count(*) FROM metrics WHERE extra IS NOT NULL").iloc[0, 0] == 0


def test_widened_column_keeps_earlier_runs(tracker: sqltrack.Tracker) -> None:
    """Verify that widening a column for one run keeps the int values another run wrote."""
    with tracker.start_run("widen") as first:
        first.log({"x": 7}, step=0)
    with tracker.start_run("widen") as second:
        second.log({"x": 0.25}, step=0)
    df = tracker.metrics([first.id, second.id])
    assert list(df["x"]) == [7.0, 0.25]
    assert metric_columns(tracker)["x"][1] == FLOAT_TYPE[tracker.dialect]


def test_int_written_after_another_process_widened_the_column(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify that an int logged through a registry that still thinks its column is BIGINT is
    stored as its value after another process widened the column to a float type."""
    with tracker.start_run("widen") as first:
        first.log({"x": 7, "y": 0.5}, step=0)
    with sqltrack.connect(db_url) as other:  # its own registry, as in another process
        with other.start_run("widen") as widening:
            widening.log({"x": 0.25}, step=0)
        assert metric_columns(other)["x"][1] == FLOAT_TYPE[other.dialect]
    with tracker.start_run("widen") as stale:  # this tracker's registry still says int
        stale.log({"x": 3, "y": 1.5}, step=0)
        stale.log({"x": -2, "y": 2.5}, step=1)
    df = tracker.metrics([first.id, widening.id, stale.id])
    assert list(df["x"]) == [7.0, 0.25, 3.0, -2.0]  # binary COPY once stored 1.5e-323, NaN
    assert list(df["y"].fillna(-1.0)) == [0.5, -1.0, 1.5, 2.5]


def test_readers_keep_working_after_another_process_widens_a_column(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify that the same reader query, asked many times (a driver may prepare it), still
    answers after another process widened a column it returns."""
    with tracker.start_run("widen") as run:
        run.log({"x": 7}, step=0)
    for _ in range(8):
        assert list(tracker.metrics(run.id)["x"]) == [7]
        assert list(tracker.runs(metrics={"x": "max"})["x:max"]) == [7]
    with sqltrack.connect(db_url) as other, other.start_run("widen") as widening:
        widening.log({"x": 0.5}, step=0)
    assert list(tracker.metrics(run.id)["x"]) == [7.0]
    assert list(tracker.runs(metrics={"x": "max"})["x:max"]) == [7.0, 0.5]


# -- values that do not fit their column ------------------------------------------------------

MISFITS = [
    # (id, value that makes the column, value that does not fit it, column family)
    ("str-into-float", 1.5, "high", "float"),
    ("str-into-nan-float", math.nan, "high", "float"),
    ("dict-into-float", 1.5, {"a": [1, 2]}, "float"),
    ("bool-into-float", 1.5, True, "float"),
    ("big-int-into-float", 1.5, 2**53 + 1, "float"),
    ("int-above-int64", 1, 2**63, "int"),
    ("int-below-int64", 1, -(2**63) - 1, "int"),
    ("huge-int", 1, 10**30, "int"),
    ("bool-into-int", 1, False, "int"),
    ("str-into-int", 1, "7", "int"),
    ("int-into-bool", True, 1, "bool"),
    ("float-into-text", "a", 2.5, "text"),
    ("list-into-text", "a", [1, "b"], "text"),
    ("str-into-json", {"a": 1}, "plain", "json"),
    ("float-into-json", [1, 2], 0.5, "json"),
]


@pytest.mark.parametrize("flush_between", [True, False], ids=["two-flushes", "one-batch"])
@pytest.mark.parametrize(
    ("first", "misfit", "family"), [m[1:] for m in MISFITS], ids=[m[0] for m in MISFITS]
)
def test_value_that_does_not_fit_goes_to_extra(
    tracker: sqltrack.Tracker, first: Any, misfit: Any, family: str, flush_between: bool
) -> None:
    """Verify that a value its column cannot hold goes to extra with a warning and reads back."""
    with tracker.start_run("misfit") as run:
        run.log({"x": first}, step=0)
        if flush_between:
            assert run.flush(timeout=WAIT_S)
        with pytest.warns(SQLTrackWarning, match=r"'x' does not fit its \w+ column"):
            run.log({"x": misfit, "y": 1}, step=1)
            assert run.flush(timeout=WAIT_S)
        run.log({"x": first}, step=2)
    sqlite = tracker.dialect == "sqlite"
    assert metric_columns(tracker)["x"][1] == RECORDED_TYPES[family][0 if sqlite else 1]
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1, 2]
    assert same(cell(df, 0, "x"), first)
    assert same(cell(df, 1, "x"), misfit)
    assert same(cell(df, 2, "x"), first)
    assert cell(df, 1, "y") == 1
    extra = tracker.query("SELECT step FROM metrics WHERE extra IS NOT NULL")
    assert list(extra["step"]) == [1]


def test_first_value_too_big_for_any_column(tracker: sqltrack.Tracker) -> None:
    """Verify that an int beyond 64 bits as a key's first value is kept in extra."""
    with tracker.start_run("misfit") as run, pytest.warns(SQLTrackWarning, match="does not fit"):
        run.log({"big": 2**64, "ok": 1}, step=0)
        assert run.flush(timeout=WAIT_S)
    df = tracker.metrics(run.id)
    assert cell(df, 0, "big") == 2**64
    assert cell(df, 0, "ok") == 1


# -- column budget ----------------------------------------------------------------------------


def test_column_budget_sends_new_keys_to_extra(db_url: str) -> None:
    """Verify that keys beyond the column budget go to extra and still read back."""
    keys = [f"k{i}" for i in range(5)]
    with sqltrack.connect(db_url, column_budget=3, flush_interval=0.05) as tracker:
        with tracker.start_run("budget") as run:
            run.log({k: i + 0.5 for i, k in enumerate(keys)}, step=0)
            run.log({k: i * 10 for i, k in enumerate(keys)}, step=1)
            run.log({"k4": "text", "k3": {"nested": [1]}}, step=2)
        mapping = metric_columns(tracker)
        assert set(mapping) == {"k0", "k1", "k2"}
        table = table_columns(tracker)
        assert set(table) == {
            "run_id",
            "step",
            "logged_at",
            "extra",
            *(c for c, _ in mapping.values()),
        }
        df = tracker.metrics(run.id)
        assert list(df["step"]) == [0, 1, 2]
        for i, key in enumerate(keys):
            assert cell(df, 0, key) == i + 0.5
            assert cell(df, 1, key) == i * 10
        assert cell(df, 2, "k4") == "text"
        assert cell(df, 2, "k3") == {"nested": [1]}
        summary = tracker.runs(metrics={"k4": "count", "k3": "max", "k0": "max"})
        assert summary.loc[0, "k4:count"] == 3
        assert summary.loc[0, "k3:max"] == 30
        assert summary.loc[0, "k0:max"] == 0.5


def test_column_budget_counts_columns_of_earlier_runs(db_url: str) -> None:
    """Verify that the budget counts every column in the database, not one run's."""
    with sqltrack.connect(db_url, column_budget=3, flush_interval=0.05) as tracker:
        with tracker.start_run("budget") as first:
            first.log({"a": 1, "b": 2}, step=0)
        with tracker.start_run("budget") as second:
            second.log({"c": 3, "d": 4}, step=0)
        assert set(metric_columns(tracker)) == {"a", "b", "c"}
        df = tracker.metrics(second.id)
        assert cell(df, 0, "c") == 3
        assert cell(df, 0, "d") == 4
    with sqltrack.connect(db_url, column_budget=10, flush_interval=0.05) as tracker:
        with tracker.start_run("budget") as third:
            third.log({"d": 5, "e": 6}, step=0)
        assert set(metric_columns(tracker)) == {"a", "b", "c", "d", "e"}
        df = tracker.metrics([second.id, third.id])
        assert list(df["d"]) == [4, 5]


# -- when rows are written --------------------------------------------------------------------


def test_flush_on_interval(tracker: sqltrack.Tracker) -> None:
    """Verify that logged rows reach the database without flush() once the interval passes."""
    run = tracker.start_run("flush")
    try:
        for step in range(3):
            run.log({"x": step}, step=step)
        assert wait_for_rows(tracker, 3) == 3
    finally:
        run.finish()


def test_flush_on_max_pending(db_url: str) -> None:
    """Verify that max_pending queued rows trigger a write long before the flush interval."""
    with sqltrack.connect(db_url, flush_interval=3600, max_pending=10) as tracker:
        run = tracker.start_run("flush")
        try:
            for step in range(10):
                run.log({"x": step}, step=step)
            assert wait_for_rows(tracker, 10) == 10
        finally:
            run.finish()


@pytest.mark.parametrize("how", ["finish", "context-manager"])
def test_flush_on_finish(db_url: str, how: str) -> None:
    """Verify that finishing a run writes every row before it returns."""
    with sqltrack.connect(db_url, flush_interval=3600) as tracker:
        run = tracker.start_run("flush")
        if how == "finish":
            for step in range(50):
                run.log({"x": step, "y": step / 4}, step=step)
            run.finish()
        else:
            with run:
                for step in range(50):
                    run.log({"x": step, "y": step / 4}, step=step)
        assert count_rows(tracker) == 50
        status = tracker.query("SELECT status FROM runs").iloc[0, 0]
        assert status == "completed"
        df = tracker.metrics(run.id)
        assert list(df["x"]) == list(range(50))


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import sqltrack_core as sqltrack

    tracker = sqltrack.connect(sys.argv[1], flush_interval=3600)
    run = tracker.start_run("exit")
    for step in range(100):
        run.log({"x": step, "y": step * 0.5}, step=step)
    print(run.id, flush=True)
    """
)

EXITS = [
    # (id, how the script ends, expected status, expected exit code)
    ("normal", "", "completed", 0),
    ("sys-exit-0", "sys.exit(0)", "completed", 0),
    ("exception", "raise RuntimeError('boom')", "failed", 1),
    ("keyboard-interrupt", "raise KeyboardInterrupt", "cancelled", None),
]


@pytest.mark.parametrize(
    ("ending", "status", "returncode"), [e[1:] for e in EXITS], ids=[e[0] for e in EXITS]
)
def test_flush_at_interpreter_exit(
    db_url: str, ending: str, status: str, returncode: int | None
) -> None:
    """Verify that an unfinished run is written and finished when its process exits."""
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT + ending, db_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if returncode is not None:
        assert proc.returncode == returncode, proc.stderr
    else:
        assert proc.returncode != 0
    run_id = int(proc.stdout.split()[0])
    with sqltrack.connect(db_url) as tracker:
        assert tracker.query("SELECT status FROM runs").iloc[0, 0] == status
        assert tracker.query("SELECT ended_at FROM runs").iloc[0, 0] is not None
        df = tracker.metrics(run_id)
        assert list(df["step"]) == list(range(100))
        assert list(df["y"]) == [s * 0.5 for s in range(100)]


# -- a column the user declared ---------------------------------------------------------------

PREDECLARED = {
    "postgresql": ("ALTER TABLE metrics ADD COLUMN val_acc NUMERIC", "numeric"),
    "sqlite": ("ALTER TABLE metrics ADD COLUMN val_acc REAL", "REAL"),
}


def test_user_predeclared_column_is_adopted(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a key whose column the user declared in a migration is written to it as is."""
    for dialect, (statement, _) in PREDECLARED.items():
        folder = tmp_path / "migrations" / dialect
        folder.mkdir(parents=True)
        (folder / "0001_val_acc.sql").write_text(statement + ";\n", encoding="utf-8")
    applied = tracker.migrate(tmp_path / "migrations")
    assert [m.name for m in applied] == ["val_acc"]
    declared = PREDECLARED[tracker.dialect][1]
    before = table_columns(tracker)
    with tracker.start_run("predeclared") as run:
        run.log({"val/acc": 0.75, "val/loss": 0.5}, step=0)
        run.log({"val/acc": 0.875}, step=1)
    mapping = metric_columns(tracker)
    assert mapping["val/acc"][0] == "val_acc"
    assert mapping["val/acc"][1].lower() == declared.lower()
    after = table_columns(tracker)
    assert after["val_acc"] == before["val_acc"]  # the user's type, not changed
    assert set(after) - set(before) == {mapping["val/loss"][0]}  # no column made for val/acc
    df = tracker.metrics(run.id)
    assert [float(v) for v in df["val/acc"]] == [0.75, 0.875]
    summary = tracker.runs(metrics={"val/acc": "max"})
    assert float(summary.loc[0, "val/acc:max"]) == 0.875
