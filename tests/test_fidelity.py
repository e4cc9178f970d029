"""The core keeps what it was given: overwrites at a step are told, NULL stays apart from NaN,
deleted checkpoints stay on record, and the writer's threads can be stopped from outside."""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import sqltrack_core as sqltrack
from sqltrack_core import SQLTrackWarning, offline
from sqltrack_core.cli import cli


def overwrite_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, SQLTrackWarning) and "the later value is kept" in str(w.message)
    ]


def test_a_different_value_at_a_logged_step_warns_once(tracker: sqltrack.Tracker) -> None:
    """Verify overwriting a key's value at a step with a different one warns once per run,
    naming the key, step and both values, and that the later value is what is stored."""
    run = tracker.start_run("exp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log({"eval_loss": 0.692448, "epoch": 2.0}, step=20)
        run.flush()  # the first value is in the database before the second arrives
        run.log({"eval_loss": 0.692657, "epoch": 2.0}, step=20)
        run.log({"eval_loss": 0.5}, step=20)  # once per run
        run.finish()
    told = overwrite_warnings(caught)
    assert len(told) == 1
    assert "'eval_loss' at step 20 was 0.692448 and is now 0.692657" in told[0]
    frame = tracker.metrics(run)
    assert frame["eval_loss"].tolist() == [0.5]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"a": 1.0}, {"a": 1.0}),  # the same value again
        ({"a": math.nan}, {"a": math.nan}),  # NaN again
        ({"a": 1}, {"a": 1.0}),  # the same number as another type
        ({"a": 1.0}, {"b": 2.0}),  # another key at the same step (Lightning's val after train)
        ({"a": 1.0}, {"a": None}),  # None is "no value": nothing is overwritten
    ],
    ids=["same", "nan", "int-float", "other-key", "none"],
)
def test_logging_a_step_again_without_changing_a_value_is_silent(
    tracker: sqltrack.Tracker, first: dict[str, float], second: dict[str, float | None]
) -> None:
    """Verify no overwrite warning where nothing stored changes."""
    run = tracker.start_run("exp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log(first, step=0)
        run.log(second, step=0)
        run.finish()
    assert overwrite_warnings(caught) == []


def test_the_writer_thread_stops_and_starts_again(tracker: sqltrack.Tracker) -> None:
    """Verify the writer thread is a daemon whose stop() writes what waits and ends it, and
    that the run goes on: the next log() starts a new thread."""
    run = tracker.start_run("exp")
    run.log({"x": 1.0}, step=0)
    (thread,) = [t for t in threading.enumerate() if t.name.startswith("sqltrack-writer")]
    assert thread.daemon
    thread.stop()  # type: ignore[attr-defined]
    assert not thread.is_alive()
    assert tracker.metrics(run)["x"].tolist() == [1.0]
    run.log({"x": 2.0}, step=1)
    assert run.stop_writer()
    assert tracker.metrics(run)["x"].tolist() == [1.0, 2.0]
    run.finish()
    assert tracker.run_info(run)["status"] == "completed"


# -- NULL and NaN in query() and `sqltrack sql` -------------------------------------------------


def test_query_keeps_null_apart_from_nan_and_ints_as_ints(tracker: sqltrack.Tracker) -> None:
    """Verify a column with NULLs keeps them missing (not NaN), ints stay ints, and a stored
    NaN stays apart from them."""
    run = tracker.start_run("exp")
    run.log({"loss": math.nan, "n": 2**53 + 1}, step=0)
    run.log({"loss": 0.5}, step=1)
    run.finish()
    frame = tracker.query("SELECT step, loss, n FROM metrics ORDER BY step")
    assert str(frame["n"].dtype) == "Int64" and frame["n"].tolist()[0] == 2**53 + 1
    assert frame["n"].isna().tolist() == [False, True]
    # PostgreSQL returns the NaN as a float, SQLite as the text it stores it as
    assert str(frame["loss"][0]) in ("nan", "NaN") and frame["loss"][1] == 0.5
    text = tracker.query("SELECT name FROM runs UNION ALL SELECT NULL")
    assert text["name"].tolist() == [None, None]


def test_sql_command_prints_null_as_empty_and_nan_as_nan(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify `sqltrack sql` shows a NULL as an empty cell, a NaN as NaN, and ints as ints."""
    run = tracker.start_run("exp")
    run.log({"loss": math.nan, "n": 3}, step=0)
    run.log({"loss": 0.25}, step=1)
    run.finish()
    result = CliRunner().invoke(
        cli,
        ["sql", "--url", db_url, "SELECT step, loss, n FROM metrics ORDER BY step"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [line.split("│")[1:-1] for line in result.output.splitlines() if "│" in line]
    cells = [[cell.strip() for cell in line] for line in lines]
    assert cells == [["0", "NaN", "3"], ["1", "0.25", ""]]


# -- deleted checkpoints ------------------------------------------------------------------------


def removed_paths(tracker: sqltrack.Tracker) -> dict[str, bool]:
    frame = tracker.query("SELECT path, removed_at FROM checkpoints ORDER BY id")
    return {
        path: not bool(frame.isna().loc[i, "removed_at"]) for i, path in enumerate(frame["path"])
    }


def test_checkpoint_removed_marks_its_rows_and_sync_carries_it(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify checkpoint_removed() sets removed_at on that path's rows only, while running
    and after the run ended, and that a copy to another database keeps the mark."""
    run = tracker.start_run("exp")
    run.register_checkpoint("a.ckpt", None, step=1)
    run.register_checkpoint("b.ckpt", None, step=2)
    run.checkpoint_removed("a.ckpt")
    run.finish()
    assert removed_paths(tracker) == {"a.ckpt": True, "b.ckpt": False}
    run.checkpoint_removed(Path("b.ckpt"))  # after the end: written at once
    assert removed_paths(tracker) == {"a.ckpt": True, "b.ckpt": True}
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    offline.copy_database(tracker.url, copy_url)
    with sqltrack.connect(copy_url) as copy:
        assert removed_paths(copy) == {"a.ckpt": True, "b.ckpt": True}
    with pytest.raises(sqltrack.ConfigurationError, match=r"must be a str or os\.PathLike"):
        run.checkpoint_removed(3)  # type: ignore[arg-type]


def test_params_of_string_like_sequences_stay_text() -> None:
    """Verify a UserString param is stored as its text (a Sequence of itself, never a list)."""
    from collections import UserString

    from sqltrack_core.integration import to_params

    assert to_params({"name": UserString("ab"), "sizes": range(3)}) == {
        "name": "ab",
        "sizes": "range(0, 3)",
    }
