"""Metric histories: `metrics(head=, tail=, steps=, every=)`, key filters and checks, the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, NotFoundError, SQLTrackWarning, _history_sql
from sqltrack_core._backends.dialect import PostgresDialect, SQLiteDialect
from sqltrack_core._history_sql import Selection, Window, history_queries, parse_window
from sqltrack_core.cli import cli

#: run "dense": one step each 0..29, "loss" at every step, "val/acc" at steps 9, 19 (a stored
#: NaN: a value) and 29
VAL = {9: 0.5, 19: math.nan, 29: 0.75}
#: run "sparse": steps 0, 7, ..., 63
SPARSE_STEPS = list(range(0, 70, 7))


@pytest.fixture
def runs(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """The runs "dense" and "sparse" (see VAL and SPARSE_STEPS), finished."""
    with tracker.start_run("hist", name="dense") as dense:
        for step in range(30):
            row: dict[str, Any] = {"loss": step / 100, "epoch": step // 10}
            if step in VAL:
                row["val/acc"] = VAL[step]
            dense.log(row, step=step)
    with tracker.start_run("hist", name="sparse") as sparse:
        for step in SPARSE_STEPS:
            sparse.log({"loss": step / 1000}, step=step)
    return {"dense": dense, "sparse": sparse}


def steps_of(df: pd.DataFrame) -> list[int]:
    return [int(s) for s in df["step"]]


HEAD_TAIL = [
    # (id, keyword arguments, steps of "dense", steps left out between head and tail)
    ("head", {"head": 3}, [0, 1, 2], None),
    ("tail", {"tail": 3}, [27, 28, 29], None),
    ("both", {"head": 2, "tail": 2}, [0, 1, 28, 29], 26),
    ("both-overlapping", {"head": 20, "tail": 20}, list(range(30)), 0),
    ("both-longer-than-history", {"head": 50, "tail": 50}, list(range(30)), 0),
    ("head-zero", {"head": 0}, [], None),
    ("head-zero-tail", {"head": 0, "tail": 2}, [28, 29], 28),
    ("tail-of-range", {"steps": "5:20", "tail": 2}, [19, 20], None),
]


@pytest.mark.parametrize(
    ("kwargs", "expected", "omitted"), [c[1:] for c in HEAD_TAIL], ids=[c[0] for c in HEAD_TAIL]
)
def test_head_and_tail(
    tracker: sqltrack.Tracker,
    runs: dict[str, sqltrack.Run],
    kwargs: dict[str, Any],
    expected: list[int],
    omitted: int | None,
) -> None:
    """Verify that head/tail return the first/last steps, each once, with what they left out."""
    df = tracker.metrics(runs["dense"], **kwargs)
    assert steps_of(df) == expected
    if expected:  # without keys, the metrics with a value in the rows returned
        assert df["loss"].tolist() == pytest.approx([s / 100 for s in expected])
        assert str(df["epoch"].dtype) == "Int64"  # the column's type, whatever the rows
    else:
        assert list(df.columns) == ["run_id", "step", "logged_at"]
    if omitted is None:
        assert "omitted_steps" not in df.attrs
    else:
        assert df.attrs["omitted_steps"] == {runs["dense"].id: omitted}


def test_head_and_tail_per_run(tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]) -> None:
    """Verify that head/tail cut each run's history, rows ordered by run and step."""
    dense, sparse = runs["dense"], runs["sparse"]
    df = tracker.metrics([sparse.id, dense, sparse.id], head=1, tail=2)
    assert list(zip(df["run_id"], steps_of(df), strict=True)) == [
        (dense.id, 0),
        (dense.id, 28),
        (dense.id, 29),
        (sparse.id, 0),
        (sparse.id, 56),
        (sparse.id, 63),
    ]
    assert df.attrs["omitted_steps"] == {dense.id: 27, sparse.id: 7}
    tails = tracker.metrics([dense, sparse], ["val/acc"], tail=1)
    assert list(zip(tails["run_id"], steps_of(tails), strict=True)) == [(dense.id, 29)]


def test_head_and_tail_of_many_runs(
    tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that runs split over several statements (BRANCH_RUNS each) all get their cut."""
    made = [runs["dense"], runs["sparse"]]
    for index in range(3):
        with tracker.start_run("hist", name=f"extra{index}") as run:
            for step in range(5):
                run.log({"loss": index + step / 10}, step=step)
        made.append(run)
    monkeypatch.setattr(_history_sql, "BRANCH_RUNS", 2)
    df = tracker.metrics(list(reversed(made)), tail=1)
    assert list(zip(df["run_id"], steps_of(df), strict=True)) == [
        (run.id, 29 if run is runs["dense"] else 63 if run is runs["sparse"] else 4) for run in made
    ]


STEP_RANGES = [
    # (id, steps argument, steps of "dense")
    ("tuple", (5, 8), [5, 6, 7, 8]),
    ("list", [28, None], [28, 29]),
    ("open-start", (None, 1), [0, 1]),
    ("text", "5:8", [5, 6, 7, 8]),
    ("text-spaces", " 5 : 8 ", [5, 6, 7, 8]),
    ("text-open-start", ":2", [0, 1, 2]),
    ("text-open-end", "27:", [27, 28, 29]),
    ("text-one-step", "12", [12]),
    ("text-open-both", ":", list(range(30))),
    ("past-the-end", "100:", []),
    ("negative-start", (-5, 0), [0]),
]


@pytest.mark.parametrize(
    ("steps", "expected"), [c[1:] for c in STEP_RANGES], ids=[c[0] for c in STEP_RANGES]
)
def test_step_range(
    tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run], steps: Any, expected: list[int]
) -> None:
    """Verify that steps= keeps the steps in the inclusive range, in each accepted form."""
    assert steps_of(tracker.metrics(runs["dense"], steps=steps)) == expected


EVERY = [
    # (id, keyword arguments, steps of "sparse": 0, 7, ..., 63)
    ("by-position", {"every": 3}, [0, 21, 42, 63]),
    ("one", {"every": 1}, SPARSE_STEPS),
    ("after-range", {"steps": "10:", "every": 3}, [14, 35, 56]),
    ("then-tail", {"every": 3, "tail": 2}, [42, 63]),
    ("then-head-and-tail", {"every": 2, "head": 1, "tail": 1}, [0, 56]),
    ("longer-than-history", {"every": 100}, [0]),
]


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in EVERY], ids=[c[0] for c in EVERY])
def test_every(
    tracker: sqltrack.Tracker,
    runs: dict[str, sqltrack.Run],
    kwargs: dict[str, Any],
    expected: list[int],
) -> None:
    """Verify that every=N keeps the first step and each N-th after it by position, after the
    step range and before head/tail."""
    df = tracker.metrics(runs["sparse"], **kwargs)
    assert steps_of(df) == expected
    if "head" in kwargs:  # 5 of the 10 steps are every 2nd: 3 left out
        assert df.attrs["omitted_steps"] == {runs["sparse"].id: 3}


def test_every_per_run(tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]) -> None:
    """Verify that every counts positions in each run apart."""
    df = tracker.metrics([runs["dense"], runs["sparse"]], every=10)
    assert list(zip(df["run_id"], steps_of(df), strict=True)) == [
        (runs["dense"].id, 0),
        (runs["dense"].id, 10),
        (runs["dense"].id, 20),
        (runs["sparse"].id, 0),
    ]


def test_keys_keep_only_steps_with_a_value(
    tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]
) -> None:
    """Verify that with keys, steps where none of them has a value are dropped (NaN is one)."""
    dense = runs["dense"]
    df = tracker.metrics(dense, ["val/acc"])
    assert list(df.columns) == ["run_id", "step", "logged_at", "val/acc"]
    assert steps_of(df) == [9, 19, 29]
    assert df["val/acc"].iloc[0] == 0.5 and math.isnan(df["val/acc"].iloc[1])
    assert steps_of(tracker.metrics(dense, "val/acc", tail=1)) == [29]
    assert steps_of(tracker.metrics(dense, ["val/acc"], every=2)) == [9, 29]
    assert steps_of(tracker.metrics(dense, ["val/acc"], steps=":20")) == [9, 19]
    both = tracker.metrics(dense, ["val/acc", "loss"], head=2)
    assert steps_of(both) == [0, 1] and list(both.columns[3:]) == ["val/acc", "loss"]
    # a key other runs logged: known, and no step of this run has it
    other = tracker.metrics(runs["sparse"], ["val/acc"])
    assert other.empty and list(other.columns) == ["run_id", "step", "logged_at", "val/acc"]


#: keys over the column budget, some that SQLite's -> would read as JSON paths
EXTRA_KEYS = ["spill/over", "a.b", "$x", 'q"uote', "arr[0]"]


def test_keys_in_extra_count(db_url: str) -> None:
    """Verify that values kept in metrics.extra (over the column budget, a value that does not
    fit its column, hostile key names) count as values; a key logged as None does not."""
    with sqltrack.connect(db_url, flush_interval=0.05, column_budget=2) as tracker:
        with tracker.start_run("extra") as run:
            run.log({"n": 0, "seed": 0.5}, step=0)  # the two columns of the budget
            assert run.flush(timeout=10)
            with pytest.warns(SQLTrackWarning, match="does not fit"):
                run.log({"n": "five"}, step=5)  # the int column cannot hold it: extra
                assert run.flush(timeout=10)
            for step in range(1, 12):
                row: dict[str, Any] = {"none": None} if step == 5 else {"n": step, "none": None}
                if step % 4 == 3:
                    row.update({key: step + 0.5 for key in EXTRA_KEYS})
                run.log(row, step=step)
        for key in EXTRA_KEYS:
            df = tracker.metrics(run, [key])
            assert steps_of(df) == [3, 7, 11], key
            assert df[key].tolist() == [3.5, 7.5, 11.5]
            assert steps_of(tracker.metrics(run, [key], tail=1, every=2)) == [11]
        assert tracker.metrics(run, ["n"], steps="5:5")["n"].tolist() == ["five"]
        assert steps_of(tracker.metrics(run, ["n"], head=1, steps="5:")) == [5]
        logged_none = tracker.metrics(run, ["none"])
        assert logged_none.empty and list(logged_none.columns[3:]) == ["none"]


def test_unknown_key_raises_with_suggestion(
    tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]
) -> None:
    """Verify that a key no run logged raises NotFoundError naming the likely key, or the
    run's keys when none is close."""
    with pytest.raises(NotFoundError, match=r"no metric key 'val/accc'; did you mean 'val/acc'\?"):
        tracker.metrics(runs["dense"], ["loss", "val/accc"], tail=3)
    with pytest.raises(NotFoundError) as caught:
        tracker.metrics(runs["sparse"], "zzz")
    assert str(caught.value) == "no metric key 'zzz'; known: 'loss'"
    with pytest.raises(NotFoundError, match="'zzz'"):
        tracker.metrics([], ["zzz"])


BAD_ARGUMENTS = [
    # (id, keyword arguments, text the message must hold)
    ("negative-head", {"head": -1}, "head -1"),
    ("float-head", {"head": 1.5}, "head 1.5"),
    ("text-head", {"head": "3"}, "head '3'"),
    ("bool-tail", {"tail": True}, "tail True"),
    ("negative-tail", {"tail": -2}, "tail -2"),
    ("zero-every", {"every": 0}, "every 0"),
    ("float-every", {"every": 2.0}, "every 2.0"),
    ("text-range", {"steps": "a:b"}, "steps 'a:b'"),
    ("three-parts", {"steps": "1:2:3"}, "steps '1:2:3'"),
    ("empty-text", {"steps": ""}, "steps ''"),
    ("reversed-text", {"steps": "5:1"}, "steps '5:1'"),
    ("reversed-tuple", {"steps": (5, 1)}, "steps (5, 1)"),
    ("three-ends", {"steps": (1, 2, 3)}, "steps (1, 2, 3)"),
    ("text-ends", {"steps": ("1", "2")}, "steps ('1', '2')"),
    ("float-end", {"steps": (1.5, None)}, "steps (1.5, None)"),
    ("number", {"steps": 5}, "steps 5"),
    ("huge-end", {"steps": (0, 2**64)}, "steps (0, 18446744073709551616)"),
    ("key-not-text", {"keys": ["loss", 3]}, "metric key 3"),
    ("keys-not-iterable", {"keys": 3}, "keys 3"),
]


@pytest.mark.parametrize(
    ("kwargs", "named"), [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS]
)
def test_bad_arguments_raise(
    tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run], kwargs: dict[str, Any], named: str
) -> None:
    """Verify that a bad count, step range or key raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as caught:
        tracker.metrics(runs["dense"], **kwargs)
    assert named in str(caught.value)


def test_tail_walks_the_index_from_the_end(tracker: sqltrack.Tracker) -> None:
    """Verify that the database answers tail= from the end of the (run_id, step) key with a
    LIMIT, not by sorting or numbering the whole history."""
    with tracker.start_run("long") as run:
        for step in range(3000):
            run.log({"loss": 1 / (step + 1)}, step=step)
    [query] = history_queries(
        Selection(ids=(run.id,), columns=('"loss"',)),
        Window(tail=5),
        tracker.backend.dialect,
    )
    if tracker.dialect == "sqlite":
        plan = tracker.query("EXPLAIN QUERY PLAN " + query.sql, query.params)["detail"].tolist()
        assert any(p.startswith("SEARCH m USING INDEX") and "run_id=?" in p for p in plan), plan
        assert not any(p.startswith("SCAN m") for p in plan), plan
    else:
        tracker.query("ANALYZE metrics")
        plan = tracker.query("EXPLAIN " + query.sql, query.params)["QUERY PLAN"].tolist()
        text = "\n".join(plan)
        assert "Limit" in text and "Index Scan Backward using metrics_pkey" in text, text
        assert "WindowAgg" not in text and "Seq Scan" not in text, text
    assert steps_of(tracker.metrics(run, tail=5)) == [2995, 2996, 2997, 2998, 2999]


# -- the SQL, without a database --------------------------------------------------------------

SHAPES = [
    # (id, window, several runs, fragments the SQL holds, fragments it does not)
    ("all", Window(), False, ["ORDER BY m.step"], ["LIMIT", "ROW_NUMBER", "run_id,"]),
    ("tail", Window(tail=5), False, ["ORDER BY m.step DESC LIMIT ?"], ["ROW_NUMBER"]),
    ("head-tail", Window(head=1, tail=1), True, ["UNION ALL", "m.step ASC LIMIT ?"], ["OVER"]),
    ("every", Window(every=3), False, ["ROW_NUMBER() OVER", "% ? = 0"], ["LIMIT"]),
    ("every-tail", Window(every=3, tail=2), True, ['"#rank" > h."#total" - ?'], ["LIMIT"]),
    ("range", Window(first=3, last=9), False, ["m.step >= ?", "m.step <= ?"], ["LIMIT"]),
]


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PostgresDialect()], ids=["sqlite", "pg"])
@pytest.mark.parametrize(
    ("window", "several", "present", "absent"),
    [c[1:] for c in SHAPES],
    ids=[c[0] for c in SHAPES],
)
def test_query_shapes(
    dialect: Any, window: Window, several: bool, present: list[str], absent: list[str]
) -> None:
    """Verify which SQL each window builds: LIMIT per run and end without every, window
    functions with it, and as many placeholders as params."""
    sel = Selection(ids=(1, 2) if several else (1,), columns=('"a"',), filter_columns=('"a"',))
    sel = Selection(sel.ids, sel.columns, sel.filter_columns, filter_keys=("a",))
    [query] = history_queries(sel, window, dialect)
    for fragment in present:
        assert fragment in query.sql
    for fragment in absent:
        assert fragment not in query.sql
    assert query.sql.count("?") == len(query.params)
    assert ("json_each" in query.sql) is isinstance(dialect, SQLiteDialect)


def test_parse_window_reads_every_form() -> None:
    """Verify that parse_window keeps numpy-like ints and reads each steps form."""

    class Index:
        def __index__(self) -> int:
            return 4

    assert parse_window(head=Index(), tail=None, steps="-3:", every=Index()) == Window(
        head=4, first=-3, every=4
    )
    assert parse_window(head=None, tail=0, steps=(None, Index()), every=None) == Window(
        tail=0, last=4
    )


# -- the CLI ----------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["metrics", *args], catch_exceptions=False)


def table_steps(output: str) -> list[int]:
    """The step column of a table printed by the CLI."""
    lines = output.splitlines()
    header = next(line for line in lines if "┃" in line and "step" in line)
    position = [cell.strip() for cell in header.split("┃")].index("step")
    rows = [line for line in lines if line.startswith("│")]
    return [int(row.split("│")[position].strip()) for row in rows]


def test_cli_table_previews_long_histories(
    db_url: str, tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]
) -> None:
    """Verify that a table shows the first and last 10 steps and says how to see the rest."""
    result = invoke("--url", db_url, str(runs["dense"].id))
    assert result.exit_code == 0, result.output
    assert table_steps(result.stdout) == [*range(10), *range(20, 30)]
    assert "10 of 30 steps not shown, between step 9 and step 20" in result.stdout
    assert "--all" in result.stdout and "--format csv" in result.stdout
    every = invoke("--url", db_url, str(runs["dense"].id), "--all")
    assert every.exit_code == 0, every.output
    assert table_steps(every.stdout) == list(range(30))
    assert "not shown" not in every.stdout
    short = invoke("--url", db_url, str(runs["sparse"].uuid))  # 10 steps: all of them
    assert table_steps(short.stdout) == SPARSE_STEPS and "not shown" not in short.stdout


CLI_CASES = [
    # (id, arguments, steps of "dense")
    ("csv-prints-everything", ["--format", "csv"], list(range(30))),
    ("tail", ["--tail", "3", "--format", "csv"], [27, 28, 29]),
    ("head-tail", ["--head", "1", "--tail", "1", "--format", "csv"], [0, 29]),
    ("steps", ["--steps", "5:8", "--format", "csv"], [5, 6, 7, 8]),
    ("every", ["--every", "10", "--format", "csv"], [0, 10, 20]),
    ("key", ["-k", "val/acc", "--format", "csv"], [9, 19, 29]),
    ("key-every-tail", ["-k", "val/acc", "--every", "2", "--tail", "1", "--format", "csv"], [29]),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_chooses_steps(
    db_url: str,
    tracker: sqltrack.Tracker,
    runs: dict[str, sqltrack.Run],
    args: list[str],
    expected: list[int],
) -> None:
    """Verify that --head, --tail, --steps, --every and -k choose the steps printed."""
    result = invoke("--url", db_url, str(runs["dense"].id), *args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(row["step"]) for row in rows] == expected


def test_cli_table_and_json_choose_the_same_steps(
    db_url: str, tracker: sqltrack.Tracker, runs: dict[str, sqltrack.Run]
) -> None:
    """Verify that a table with --tail shows those steps only, and JSON the same ones."""
    table = invoke("--url", db_url, str(runs["dense"].id), "--tail", "4")
    assert table_steps(table.stdout) == [26, 27, 28, 29] and "not shown" not in table.stdout
    records = json.loads(
        invoke("--url", db_url, str(runs["dense"].id), "-k", "val/acc", "--format", "json").stdout
    )
    assert [r["step"] for r in records] == [9, 19, 29]
    empty = invoke("--url", db_url, str(runs["dense"].id), "--steps", "100:")
    assert empty.exit_code == 0, empty.output
    assert f"no step of run {runs['dense'].id} has a metric in steps 100:" in empty.stdout


CLI_ERRORS = [
    # (id, arguments, text of the one error line)
    ("unknown-key", ["-k", "val/accc"], "did you mean 'val/acc'?"),
    ("negative-head", ["--head", "-1"], "head -1"),
    ("bad-range", ["--steps", "9:1"], "steps '9:1'"),
    ("zero-every", ["--every", "0"], "every 0"),
]


@pytest.mark.parametrize(
    ("args", "message"), [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS]
)
def test_cli_errors_are_one_line(
    db_url: str,
    tracker: sqltrack.Tracker,
    runs: dict[str, sqltrack.Run],
    args: list[str],
    message: str,
) -> None:
    """Verify that bad arguments print one error line naming the value, exit status 1."""
    result = invoke("--url", db_url, str(runs["dense"].id), *args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line


def test_cli_all_refuses_head_and_tail(db_url: str) -> None:
    """Verify that --all with --head or --tail is a usage error."""
    result = invoke("--url", db_url, "1", "--all", "--tail", "3")
    assert result.exit_code == 2
    assert "--all prints every step" in result.stderr


def test_an_unknown_run_id_is_named_not_an_empty_history(tracker: sqltrack.Tracker) -> None:
    """Verify that the history of a run id that does not exist raises NotFoundError with
    the nearest ids, as the CLI says, rather than returning an empty frame."""
    with tracker.start_run("e") as run:
        run.log({"loss": 1.0}, step=0)
    with pytest.raises(NotFoundError, match=f"no run {run.id + 40}"):
        tracker.metrics([run.id, run.id + 40])
