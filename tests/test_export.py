"""`Tracker.export` and ``sqltrack export``: CSV, JSON Lines and Parquet, wide and long, streamed.

Every database test runs on SQLite and PostgreSQL. Files are read back with the standard
library (csv, json) and pyarrow, and compared with what `Tracker.metrics` reads.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core._export_plan import unique_labels, widen
from sqltrack_core._export_writers import format_of
from sqltrack_core.cli import cli
from sqltrack_core.errors import (
    ConfigurationError,
    MissingDependencyError,
    NotFoundError,
    SQLTrackWarning,
)

WAIT_S = 30.0
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: metric key -> how a CSV cell of it reads back
PARSE: dict[str, Any] = {
    "loss": float,
    "epoch": int,
    "ok": {"true": True, "false": False}.__getitem__,
    "note": str,
    "cfg": json.loads,
    "late": float,
    "val/acc": float,
}
HOSTILE = 'a, "quoted"\nline\r\n, ünï ✓'


def log_runs(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """Three runs over two experiments. With ``column_budget=4`` loss, epoch, ok and note get
    columns and cfg, late and val/acc live only in ``metrics.extra``; NaN and ±inf in both."""
    runs = {}
    alpha = tracker.start_run(
        "mnist", name="alpha", params={"lr": 0.1, "opt": {"name": "adam"}, "tags": [1, 2]}
    )
    losses = [0.5, 0.25, math.nan, math.inf, 0.125]
    for step, loss in enumerate(losses):
        alpha.log(
            {
                "loss": loss,
                "epoch": step // 2,
                "ok": step % 2 == 0,
                "note": HOSTILE if step == 1 else f"n{step}",
                "cfg": {"depth": step, "x": [1.5, "s"]},
            },
            step=step,
        )
    alpha.log({"late": -math.inf}, step=5)
    alpha.log({"late": math.nan}, step=6)
    alpha.finish()
    beta = tracker.start_run("mnist", name="beta", params={"lr": 2, "extra_param": True})
    beta.log({"loss": 1.0}, step=0)
    beta.log({"val/acc": 0.75}, step=10)
    beta.log({"loss": 0.0625, "epoch": 3}, step=20)
    beta.finish()
    gamma = tracker.start_run("other", name="gamma")
    gamma.log({"loss": 3.0}, step=7)
    gamma.finish()
    runs.update(alpha=alpha, beta=beta, gamma=gamma)
    return runs


@pytest.fixture
def budget_tracker(db_url: str) -> Any:
    """A tracker whose metric columns stop at 4, so later keys go to metrics.extra."""
    t = sqltrack.connect(db_url, flush_interval=0.05, column_budget=4)
    try:
        yield t
    finally:
        t.close()


def missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or str(value) in ("<NA>", "NaT")
    )


def plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and type(value).__module__ == "numpy" else value


def expected(
    tracker: sqltrack.Tracker, runs: list[sqltrack.Run]
) -> dict[tuple[int, int, str], Any]:
    """(run id, step, key) -> value, as `Tracker.metrics` reads them (NaN counts as missing:
    a frame cannot tell them apart; the tests check NaN on its own)."""
    df = tracker.metrics([r.id for r in runs])  # type: ignore[misc]
    out = {}
    for row in df.to_dict("records"):
        for key in PARSE:
            value = row.get(key)
            if key in row and not missing(value):
                out[(int(row["run_id"]), int(row["step"]), key)] = plain(value)
    return out


def ms_time(stamp: Any) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def read_csv(source: str | Path) -> list[dict[str, str]]:
    """The records of CSV text or of a CSV file (read without newline translation)."""
    if isinstance(source, Path):
        source = source.read_bytes().decode("utf-8")
    return list(csv.DictReader(io.StringIO(source, newline="")))


def wide_values(records: list[dict[str, Any]], parse: bool) -> dict[tuple[int, int, str], Any]:
    out = {}
    for record in records:
        for key in PARSE:
            value = record.get(key)
            if key in record and value not in ("", None):
                got = PARSE[key](value) if parse else value
                if isinstance(got, str) and key in ("loss", "late", "val/acc"):
                    got = float(got)  # JSON's "Infinity"
                if not missing(got):
                    out[(int(record["run_id"]), int(record["step"]), key)] = got
    return out


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_wide_round_trip(budget_tracker: sqltrack.Tracker, tmp_path: Path, fmt: str) -> None:
    """Verify that a wide export reads back as Tracker.metrics reads the runs, every value type
    and extra-only key included, with the run's columns and ISO-8601 times in milliseconds."""
    runs = log_runs(budget_tracker)
    path = tmp_path / f"out.{fmt}"
    result = budget_tracker.export(path)
    assert result.format == fmt and result.runs == 3 and result.steps == 11
    frame = budget_tracker.metrics([r.id for r in runs.values()])  # type: ignore[misc]
    if fmt == "parquet":
        records = pq.read_table(path).to_pylist()
        times = [r["logged_at"].strftime("%Y-%m-%dT%H:%M:%S.%f") for r in records]
        assert times == [t.strftime("%Y-%m-%dT%H:%M:%S.%f") for t in frame["logged_at"]]
    elif fmt == "jsonl":
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        records = read_csv(path)
    if fmt != "parquet":
        assert [r["logged_at"] for r in records] == [ms_time(t) for t in frame["logged_at"]]
        assert all(ISO_MS.match(r["logged_at"]) for r in records)
    assert list(records[0])[:6] == [
        "run_id",
        "run_uuid",
        "experiment",
        "run_name",
        "step",
        "logged_at",
    ]
    assert set(list(records[0])[6:]) == set(PARSE)
    assert len(records) == result.rows == len(frame)
    by_run = {r.id: r for r in runs.values()}
    for record in records:
        run = by_run[int(record["run_id"])]
        assert record["run_uuid"] == str(run.uuid)
        assert record["run_name"] == run.name
        assert record["experiment"] == ("other" if run.name == "gamma" else "mnist")
    if fmt == "parquet":  # JSON values are JSON text there
        for record in records:
            record["cfg"] = None if record["cfg"] is None else json.loads(record["cfg"])
    assert wide_values(records, parse=fmt == "csv") == expected(budget_tracker, list(runs.values()))


def test_nan_and_infinities(budget_tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that NaN is missing and ±inf is Infinity/-Infinity in CSV and JSON Lines (as the
    other commands spell them), in a column and in extra, while Parquet keeps them as floats."""
    runs = log_runs(budget_tracker)
    alpha = runs["alpha"].id
    rows = {}
    for fmt in ("csv", "jsonl", "parquet"):
        path = tmp_path / f"o.{fmt}"
        budget_tracker.export(path, runs=[alpha], keys=["loss", "late"])
        if fmt == "csv":
            records: list[dict[str, Any]] = read_csv(path)
        elif fmt == "jsonl":
            records = [json.loads(line) for line in path.read_text().splitlines()]
        else:
            records = pq.read_table(path).to_pylist()
        rows[fmt] = {int(r["step"]): (r["loss"], r["late"]) for r in records}
    assert rows["csv"][2][0] == "" and rows["csv"][3][0] == "Infinity"
    assert rows["csv"][5][1] == "-Infinity" and rows["csv"][6][1] == ""
    assert rows["jsonl"][2][0] is None and rows["jsonl"][3][0] == "Infinity"
    assert rows["jsonl"][5][1] == "-Infinity" and rows["jsonl"][6][1] is None
    assert math.isnan(rows["parquet"][2][0]) and rows["parquet"][3][0] == math.inf
    assert rows["parquet"][5][1] == -math.inf and math.isnan(rows["parquet"][6][1])
    assert rows["parquet"][5][0] is None  # not logged: null, apart from NaN


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_long_round_trip(budget_tracker: sqltrack.Tracker, tmp_path: Path, fmt: str) -> None:
    """Verify that the long layout has one row per logged value (NaN included), in run, step
    and key order, holding what Tracker.metrics reads."""
    runs = log_runs(budget_tracker)
    path = tmp_path / f"long.{fmt}"
    result = budget_tracker.export(path, layout="long")
    if fmt == "parquet":
        table = pq.read_table(path)
        assert table.column_names[-3:] == ["key", "value", "value_text"]
        records = table.to_pylist()
        for r in records:
            r["value"] = r["value"] if r["value_text"] is None else r["value_text"]
    elif fmt == "jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        records = read_csv(path)
    assert len(records) == result.rows == result.values == 5 * 5 + 2 + 4 + 1
    order = [(int(r["run_id"]), int(r["step"])) for r in records]
    assert order == sorted(order)
    got = {}
    for r in records:
        key, value = r["key"], r["value"]
        if value in ("", None):  # a NaN (the row is there: NaN was logged)
            assert key in ("loss", "late")
            continue
        if fmt == "csv" or (fmt == "parquet" and key in ("cfg", "epoch")):
            value = PARSE[key](value) if isinstance(value, str) else int(value)
        elif fmt == "parquet" and key == "ok":
            value = bool(value)
        elif isinstance(value, str) and key in ("loss", "late"):
            value = float(value)  # JSON's "Infinity"
        if not missing(value):
            got[(int(r["run_id"]), int(r["step"]), key)] = value
    assert got == expected(budget_tracker, list(runs.values()))


def test_hostile_text_and_json_in_csv(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that text with commas, quotes, line breaks and non-ASCII, JSON values and a key
    named like a fixed column survive CSV (csv.reader) and JSON Lines."""
    with tracker.start_run(HOSTILE, name=HOSTILE, params={HOSTILE: HOSTILE}) as run:
        run.log({HOSTILE: HOSTILE, "step": 3, "j": {"k": [HOSTILE, None]}}, step=0)
    for fmt in ("csv", "jsonl"):
        path = tmp_path / f"h.{fmt}"
        tracker.export(path, params=True)
        if fmt == "csv":
            (record,) = read_csv(path)
            assert json.loads(record["j"]) == {"k": [HOSTILE, None]}
        else:
            (line,) = path.read_text(encoding="utf-8").splitlines()
            record = json.loads(line)
            assert record["j"] == {"k": [HOSTILE, None]}
        assert record["experiment"] == record["run_name"] == record[HOSTILE] == HOSTILE
        assert record[f"params.{HOSTILE}"] == HOSTILE
        assert str(record["step"]) == "0" and str(record["step_"]) == "3"


def test_misfit_value_in_extra_is_exported(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a value its column could not hold (kept in extra) is exported at its step,
    the column then holding mixed values (JSON text in Parquet)."""
    with tracker.start_run("misfit") as run:
        run.log({"x": 1.5}, step=0)
        with pytest.warns(SQLTrackWarning, match="does not fit"):
            run.log({"x": "high"}, step=1)
            assert run.flush(timeout=WAIT_S)
    tracker.export(tmp_path / "m.csv")
    assert [r["x"] for r in read_csv(tmp_path / "m.csv")] == ["1.5", "high"]
    tracker.export(tmp_path / "m.parquet")
    assert pq.read_table(tmp_path / "m.parquet").column("x").to_pylist() == ["1.5", '"high"']


# -- selection ------------------------------------------------------------------------------------


def test_selection_by_experiment_runs_where_and_keys(budget_tracker: sqltrack.Tracker) -> None:
    """Verify that experiment, runs (id, UUID, name, Run), where with args and keys narrow the
    export, and that with keys the wide layout leaves out steps without any of them."""
    runs = log_runs(budget_tracker)
    alpha, beta = runs["alpha"], runs["beta"]

    def exported(**kwargs: Any) -> list[dict[str, str]]:
        out = io.StringIO()
        budget_tracker.export(out, **kwargs)
        return read_csv(out.getvalue())

    assert {r["run_name"] for r in exported(experiment="mnist")} == {"alpha", "beta"}
    for ref in (beta.id, str(beta.uuid), "beta", beta, str(beta.id)):
        assert {r["run_name"] for r in exported(runs=[ref])} == {"beta"}
    assert {r["run_name"] for r in exported(runs=beta)} == {"beta"}  # one run, not a list
    assert {r["run_name"] for r in exported(where="r.name LIKE ?", args=["%amm%"])} == {"gamma"}
    assert {r["run_name"] for r in exported(where="r.name LIKE '%amm%'")} == {"gamma"}
    assert {r["run_name"] for r in exported(where="e.name = ?", args=["other"])} == {"gamma"}
    rows = exported(experiment="mnist", keys=["val/acc", "loss"])
    assert list(rows[0])[6:] == ["val/acc", "loss"]
    frame = budget_tracker.metrics([alpha.id, beta.id], ["val/acc", "loss"])  # type: ignore[list-item]
    assert [(int(r["run_id"]), int(r["step"])) for r in rows] == list(
        zip(frame["run_id"], frame["step"], strict=True)
    )
    assert exported(where="1 = 0") == []


def test_runs_in_several_queries(
    budget_tracker: sqltrack.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that runs read a batch of runs per query come out the same, in run order."""
    log_runs(budget_tracker)
    whole = io.StringIO()
    budget_tracker.export(whole, experiment="mnist", layout="long")
    monkeypatch.setattr("sqltrack_core._export_plan.RUN_BATCH", 1)
    batched = io.StringIO()
    budget_tracker.export(batched, experiment="mnist", layout="long")
    assert batched.getvalue() == whole.getvalue()
    assert {r["run_name"] for r in read_csv(whole.getvalue())} == {"alpha", "beta"}


def test_export_is_a_snapshot(tracker: sqltrack.Tracker) -> None:
    """Verify that what runs log while an export reads is not in it: one consistent snapshot.

    (A new key would wait: on PostgreSQL, adding its column needs the table to itself, and
    the writer retries until the export ends.)"""
    run = tracker.start_run("live")
    for step in range(6000):
        run.log({"a": 1.0}, step=step)
    assert run.flush(timeout=WAIT_S)

    def log_more(done: int, total: int | None) -> None:
        if done == 5000:
            for step in range(6000, 6100):
                run.log({"a": 2.0}, step=step)
            assert run.flush(timeout=WAIT_S)

    out = io.StringIO()
    result = tracker.export(out, progress=log_more)
    run.finish()
    records = read_csv(out.getvalue())
    assert result.rows == len(records) == 6000 and {r["a"] for r in records} == {"1.0"}
    assert len(read_csv(_export(tracker))) == 6100


def _export(tracker: sqltrack.Tracker, **kwargs: Any) -> str:
    out = io.StringIO()
    tracker.export(out, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"experiment": "mnst"}, "no experiment 'mnst'; did you mean 'mnist'?"),
        ({"runs": ["alpah"]}, "no run 'alpah'; did you mean 'alpha'?"),
        ({"runs": [999]}, "no run '999'; known: '1', '2', '3'"),
        (
            {"runs": ["00000000-0000-0000-0000-000000000000"]},
            "no run '00000000-0000-0000-0000-000000000000'",
        ),
        ({"keys": ["los"]}, "no metric key 'los'; did you mean 'loss'?"),
        ({"keys": ["val/ac"]}, "no metric key 'val/ac'; did you mean 'val/acc'?"),
        ({"experiment": "other", "runs": ["alpha"]}, "no run 'alpha'; known: 'gamma'"),
        ({"experiment": "other", "runs": [1]}, "run 1 is in experiment 'mnist', not 'other'"),
    ],
    ids=[
        "experiment",
        "run-name",
        "run-id",
        "run-uuid",
        "key",
        "extra-key",
        "name-elsewhere",
        "id-elsewhere",
    ],
)
def test_unknown_names(
    budget_tracker: sqltrack.Tracker, kwargs: dict[str, Any], message: str
) -> None:
    """Verify that an unknown experiment, run or metric key raises NotFoundError with the
    one-line 'did you mean' message, and writes no file."""
    log_runs(budget_tracker)
    with pytest.raises(NotFoundError) as info:
        budget_tracker.export(io.StringIO(), **kwargs)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "tall"}, "layout 'tall' is not one of wide, long"),
        ({"format": "xlsx"}, "format 'xlsx' is not one of csv, jsonl, parquet"),
        ({"keys": "loss"}, "keys 'loss' is a str; expected a list"),
        ({"runs": [1.5]}, "run 1.5 is a float; expected a Run"),
        ({"where": " "}, "where ' ' must be a non-empty SQL condition"),
        ({"args": [1]}, "args [1] were given without a where condition"),
        ({"where": "r.id = ?"}, "query has 1 '?' placeholder but 0 params were given"),
    ],
    ids=["layout", "format", "keys-str", "run-type", "empty-where", "args-alone", "args-missing"],
)
def test_bad_arguments(tracker: sqltrack.Tracker, kwargs: dict[str, Any], message: str) -> None:
    """Verify that bad arguments raise ConfigurationError naming the value and what is expected."""
    with tracker.start_run("e") as run:
        run.log({"loss": 1.0}, step=0)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        tracker.export(io.StringIO(), **kwargs)


def test_run_name_shared_by_two_runs(tracker: sqltrack.Tracker) -> None:
    """Verify that a run name two runs share is refused, naming both ids."""
    for _ in range(2):
        with tracker.start_run("e", name="twin") as run:
            run.log({"loss": 1.0}, step=0)
    with pytest.raises(ConfigurationError, match=r"run name 'twin' is shared by runs 1, 2"):
        tracker.export(io.StringIO(), runs=["twin"])


# -- params and types -----------------------------------------------------------------------------


def test_params_columns(budget_tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that params=True adds one params.<dotted name> column per param of any selected
    run (empty where a run has none), typed in Parquet by the values the runs hold."""
    log_runs(budget_tracker)
    budget_tracker.export(tmp_path / "p.csv", experiment="mnist", params=True)
    records = read_csv(tmp_path / "p.csv")
    names = list(records[0])
    assert names[4:9] == [
        "params.extra_param",
        "params.lr",
        "params.opt.name",
        "params.tags",
        "step",
    ]
    first = {r["run_name"]: r for r in records}
    assert first["alpha"]["params.opt.name"] == "adam" and first["alpha"]["params.tags"] == "[1, 2]"
    assert (
        first["alpha"]["params.extra_param"] == "" and first["beta"]["params.extra_param"] == "true"
    )
    budget_tracker.export(tmp_path / "p.parquet", experiment="mnist", params=True)
    schema = pq.read_table(tmp_path / "p.parquet").schema
    assert str(schema.field("params.lr").type) == "double"  # 0.1 and 2: a float
    assert str(schema.field("params.extra_param").type) == "bool"
    assert str(schema.field("params.tags").type) == "string"  # JSON text
    assert str(schema.field("epoch").type) == "int64"
    assert str(schema.field("ok").type) == "bool"


def test_empty_selection_writes_the_header(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that an export matching no rows writes a header-only CSV and an empty Parquet."""
    result = tracker.export(tmp_path / "e.csv")
    assert (
        tmp_path / "e.csv"
    ).read_text() == "run_id,run_uuid,experiment,run_name,step,logged_at\n"
    assert (result.rows, result.runs, result.steps) == (0, 0, 0)
    tracker.export(tmp_path / "e.parquet", layout="long")
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


# -- targets --------------------------------------------------------------------------------------


def test_targets(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that exports go to text and binary file objects (left open), to .gz paths, and
    that the format comes from the suffix."""
    with tracker.start_run("e", name="r") as run:
        run.log({"loss": 0.5}, step=0)
    text, raw = io.StringIO(), io.BytesIO()
    out = tmp_path / "out"
    out.mkdir()
    tracker.export(text)
    tracker.export(raw, format="jsonl")
    assert not text.closed and not raw.closed
    assert read_csv(text.getvalue())[0]["loss"] == "0.5"
    assert json.loads(raw.getvalue())["loss"] == 0.5
    tracker.export(out / "o.jsonl.gz")
    assert json.loads(gzip.decompress((out / "o.jsonl.gz").read_bytes()))["run_name"] == "r"
    parquet = io.BytesIO()
    assert tracker.export(parquet, format="parquet").format == "parquet"
    assert pq.read_table(io.BytesIO(parquet.getvalue())).column("loss").to_pylist() == [0.5]
    assert [p.name for p in out.iterdir()] == ["o.jsonl.gz"]  # no temporary file left


@pytest.mark.parametrize(
    ("target", "fmt", "expected_format"),
    [
        ("a.csv", None, "csv"),
        ("a.CSV.gz", None, "csv"),
        ("a.ndjson", None, "jsonl"),
        ("dir.v2/a.jsonl", None, "jsonl"),
        ("a.pq", None, "parquet"),
        ("a.txt", "csv", "csv"),
        ("a.parquet", "jsonl", "jsonl"),
    ],
)
def test_format_of(target: str, fmt: str | None, expected_format: str) -> None:
    """Verify that the format is the one asked for, else the one the suffix names."""
    assert format_of(target, fmt) == expected_format


@pytest.mark.parametrize("target", ["a.json", "a", "a.gz"])
def test_format_of_unknown_suffix(target: str) -> None:
    """Verify that a path whose suffix names no format is refused, listing the known ones."""
    with pytest.raises(ConfigurationError, match=r"cannot tell the format of .*\.csv, \.jsonl"):
        format_of(target, None)


def test_failed_export_leaves_no_file(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that an export that fails midway leaves neither the file nor a temporary one,
    and that an existing file keeps its content."""
    with tracker.start_run("e") as run:
        for step in range(3):
            run.log({"loss": 0.5}, step=step)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "keep.csv"
    target.write_text("old\n")

    def boom(done: int, total: int | None) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        tracker.export(target, progress=boom)
    assert target.read_text() == "old\n"
    assert [p.name for p in out.iterdir()] == ["keep.csv"]
    with pytest.raises(ConfigurationError, match="cannot write"):
        tracker.export(tmp_path / "missing" / "x.csv")
    with pytest.raises(ConfigurationError, match=r"drop the \.gz suffix"):
        tracker.export(tmp_path / "x.parquet.gz", format="parquet")


def test_progress_counts_steps(tracker: sqltrack.Tracker) -> None:
    """Verify that progress hears the steps read so far, rising to their total."""
    with tracker.start_run("e") as run:
        for step in range(12_000):
            run.log({"loss": 0.5}, step=step)
    calls: list[tuple[int, int | None]] = []
    tracker.export(io.StringIO(), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5000, 12_000), (10_000, 12_000), (12_000, 12_000)]


def test_missing_pyarrow(tracker: sqltrack.Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that Parquet without pyarrow raises MissingDependencyError naming the extra."""
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'sqltrack-core\[parquet\]'"):
        tracker.export(io.BytesIO(), format="parquet")


# -- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("families", "family"),
    [
        ({"float"}, "float"),
        ({"int", "float"}, "float"),
        ({"int", "null"}, "int"),
        ({"null"}, "text"),
        (set(), "text"),
        ({"bool", "int"}, "mixed"),
        ({"text", "float"}, "mixed"),
        ({"other"}, "other"),
    ],
)
def test_widen(families: set[str], family: str) -> None:
    """Verify the family a file column gets from the families of its values."""
    assert widen(families) == family


def test_unique_labels() -> None:
    """Verify that keys equal to a fixed column get trailing underscores, clear of other keys."""
    fixed = ["run_id", "step", "logged_at"]
    assert unique_labels(fixed, ["step", "step_", "a"]) == ["step__", "step_", "a"]


# -- the command line -----------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_to_stdout(budget_tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that ``sqltrack export -o -`` writes CSV to stdout and its summary to stderr,
    with the same rows as the API."""
    log_runs(budget_tracker)
    result = invoke(
        "export", "--url", db_url, "-e", "mnist", "-k", "loss", "--layout", "long", "-o", "-"
    )
    assert result.exit_code == 0, result.output
    records = read_csv(result.stdout)
    assert [r["key"] for r in records] == ["loss"] * 7
    assert (
        result.stderr.strip() == "exported 7 row(s), 7 value(s) of 2 run(s) to stdout (csv, long)"
    )
    api = io.StringIO()
    budget_tracker.export(api, experiment="mnist", keys=["loss"], layout="long")
    assert result.stdout == api.getvalue()


def test_cli_to_files(budget_tracker: sqltrack.Tracker, db_url: str, tmp_path: Path) -> None:
    """Verify that ``-o FILE`` picks the format from the suffix, and --run, --where, --params
    and --format reach the export."""
    runs = log_runs(budget_tracker)
    out = tmp_path / "o.parquet"
    result = invoke(
        "export",
        "--url",
        db_url,
        "--run",
        "alpha",
        "--run",
        str(runs["gamma"].id),
        "--params",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"exported 8 row(s), 28 value(s) of 2 run(s) to {out} (parquet, wide)\n"
    table = pq.read_table(out)
    assert set(table.column("run_name").to_pylist()) == {"alpha", "gamma"}
    assert "params.opt.name" in table.column_names
    result = invoke(
        "export",
        "--url",
        db_url,
        "--where",
        "r.name = 'beta'",
        "--format",
        "jsonl",
        "-o",
        str(tmp_path / "o.txt"),
    )
    assert result.exit_code == 0, result.output
    assert {
        json.loads(line)["run_name"] for line in (tmp_path / "o.txt").read_text().splitlines()
    } == {"beta"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "mnst"], "Error: no experiment 'mnst'; did you mean 'mnist'?"),
        (["-k", "los"], "Error: no metric key 'los'; did you mean 'loss'?"),
        (["--run", "alpah"], "Error: no run 'alpah'; did you mean 'alpha'?"),
        (["-o", "x.json"], "Error: cannot tell the format of 'x.json' from its suffix"),
    ],
)
def test_cli_errors(
    budget_tracker: sqltrack.Tracker, db_url: str, args: list[str], message: str
) -> None:
    """Verify that unknown names and unusable targets are one line on stderr, exit status 1."""
    log_runs(budget_tracker)
    result = invoke("export", "--url", db_url, *args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(message)


def test_cli_help() -> None:
    """Verify that ``sqltrack export --help`` lists the options and exits 0."""
    result = invoke("export", "--help")
    assert result.exit_code == 0
    for option in (
        "--experiment",
        "--run",
        "--where",
        "--key",
        "--layout",
        "--format",
        "--params",
        "--output",
    ):
        assert option in result.stdout


# -- memory ---------------------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import sys
    import sqltrack_core as sqltrack
    import sqltrack_core._export_writers as writers
    writers.ROW_GROUP_ROWS = 4096  # several row groups in the small export too
    tracker = sqltrack.connect(sys.argv[1])
    runs = None if sys.argv[2] == "all" else [sys.argv[2]]
    result = tracker.export(sys.argv[3], runs=runs, layout=sys.argv[4])
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0])
    print(result.rows, peak)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(
    ("layout", "suffix"), [("wide", "csv"), ("long", "csv"), ("wide", "parquet")]
)
def test_memory_does_not_grow_with_rows(
    db_url: str, tmp_path: Path, layout: str, suffix: str
) -> None:
    """Verify that exporting 200k steps takes no more memory than exporting 20k (peak RSS of a
    subprocess each): rows are streamed, never all held (Parquet: a row group at most)."""
    with sqltrack.connect(db_url) as tracker:
        for name, steps in (("small", 20_000), ("big", 180_000)):
            with tracker.start_run("mem", name=name) as run:
                for step in range(steps):
                    run.log({"a": step * 0.5, "b": step}, step=step)
    peaks = {}
    for runs in ("small", "all"):
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, db_url, runs, str(tmp_path / f"{runs}.{suffix}"), layout],
            capture_output=True,
            text=True,
            check=True,
        )
        rows, peaks[runs] = map(int, done.stdout.split())
        assert rows == (1 if layout == "wide" else 2) * (20_000 if runs == "small" else 200_000)
    # holding 200k rows would take ~40 MB more (wide; twice that long); chunks take a few
    assert peaks["all"] - peaks["small"] < 12_000, peaks


def test_rows_left_by_a_deleted_run_are_not_exported(tracker: sqltrack.Tracker) -> None:
    """Verify that metric rows whose run was deleted (another process still logging to it
    writes after the delete: metrics has no foreign key) are left out, not a crash."""
    kept = tracker.start_run("exp", name="kept")
    kept.log({"loss": 1.0}, step=0)
    kept.finish()
    gone = tracker.start_run("exp", name="gone")
    gone.log({"loss": 2.0}, step=0)
    gone.finish()
    gone_id = gone.id
    tracker.delete_run(gone)
    b = tracker.backend
    with b.transaction():  # what the other process's writer does after the delete
        b.execute(
            b.sql("INSERT INTO metrics (run_id, step, logged_at) VALUES (?, ?, ?)"),
            (gone_id, 1, b.timestamp(0.0)),
        )
    rows = list(csv.DictReader(io.StringIO(_export(tracker))))
    assert [(row["run_name"], row["step"]) for row in rows] == [("kept", "0")]


def test_cli_where_takes_its_args(tracker: sqltrack.Tracker) -> None:
    """Verify that `sqltrack export --where ... --arg ...` binds each ? to a value."""
    for name in ("base-1", "other"):
        run = tracker.start_run("exp", name=name)
        run.log({"loss": 1.0}, step=0)
        run.finish()
    result = CliRunner().invoke(
        cli,
        ["export", "--url", tracker.url, "--where", "r.name LIKE ?", "--arg", "base-%"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["run_name"] for row in rows] == ["base-1"]
