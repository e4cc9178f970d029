"""How the commands print: tables that fit the terminal, and one spelling per type in every
format (times, booleans, JSON values, NaN and infinities), on both backends."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core.cli import cli
from sqltrack_core.cli._output import cell, dumps, jsonable, render_table, to_csv, to_json
from sqltrack_core.cli._table import Column, fit_text, layout, text_width, wrap_header

#: an ISO-8601 UTC time as every format writes it
ISO_MS_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"

#: 155 params and the 12 run columns: the 167 columns of the issue's Hugging Face runs
WIDE_PARAMS = {f"args.option_number_{i:03d}_of_the_trainer": i % 7 for i in range(150)} | {
    "model": {"hidden_size": 64, "architectures": ["BertForMaskedLM"], "name": "tiny-bert"},
    "note": "a long free-text parameter " * 4,
    "lr": 0.002,
}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


def wide_frame(rows: int = 3, columns: int = 167) -> pd.DataFrame:
    """A frame like `runs` of a Hugging Face experiment: a few run columns, many params."""
    data: dict[str, Any] = {
        "id": list(range(1, rows + 1)),
        "name": [f"classifier-{i}" for i in range(rows)],
        "status": ["completed"] * rows,
        "started_at": pd.to_datetime([1_767_000_000_123] * rows, unit="ms", utc=True),
    }
    for i in range(columns - len(data)):
        data[f"params.args.accelerator_config.option_{i:03d}"] = [i * 0.5] * rows
    return pd.DataFrame(data)


def assert_fits(text: str, width: int) -> None:
    """No line wider than `width`, a table with its header, and never an empty grid."""
    lines = text.splitlines()
    assert lines, "nothing printed"
    assert max(text_width(line) for line in lines) <= width, text
    assert not any(mark in text for mark in ("┳┳", "╇╇", "┴┴", "┏┓")), text


def header_text(text: str) -> str:
    """The words of a boxed table's header rows."""
    rows = [ln for ln in text.splitlines() if ln.startswith("┃")]
    return " ".join(part.strip() for row in rows for part in row.strip("┃").split("┃"))


# -- tables that fit ------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("columns", [6, 167])
def test_tables_fit_the_width(width: int, columns: int) -> None:
    """Verify that a table of 6 or 167 columns fits 80 and 120 cells, its header readable,
    and says which columns it hid."""
    text = render_table(wide_frame(columns=columns), width=width, title="runs")
    assert_fits(text, width)
    head = header_text(text)
    for name in ("id", "name", "status", "started_at"):
        assert name in head.split(), head
    assert "2025-12-29T09:20:00.123Z" in text and "classifier-0" in text
    if columns == 167:
        assert "hidden to fit" in text and "--format csv or json" in text


def test_a_table_without_a_width_keeps_every_column_whole() -> None:
    """Verify that piped output (no width) has every column and every value uncut."""
    frame = wide_frame(columns=40)
    frame["name"] = ["x" * 300] * len(frame)
    text = render_table(frame, width=None)
    assert "x" * 300 in text and "…" not in text and "hidden" not in text
    assert all(str(c) in header_text(text) for c in frame.columns[:3])


def test_long_values_are_cut_with_an_ellipsis_and_a_note() -> None:
    """Verify that long text is cut with … to fit, numbers and times are not, and a note
    says so."""
    frame = pd.DataFrame(
        {
            "id": [123456789],
            "comment": ["a very long comment that goes on " * 5],
            "loss": [0.123456],
            "at": pd.to_datetime([0], unit="s", utc=True),
        }
    )
    frame = pd.concat([frame, frame], ignore_index=True)
    text = render_table(frame, width=72)
    assert_fits(text, 72)
    assert "…" in text and "cut short" in text
    assert "123456789" in text and "0.123456" in text and "1970-01-01T00:00:00.000Z" in text


def test_a_single_wide_row_is_shown_transposed() -> None:
    """Verify that one row whose columns cannot fit is shown as column | value lines."""
    text = render_table(wide_frame(rows=1, columns=30), width=80)
    assert_fits(text, 80)
    assert header_text(text).split() == ["column", "value"]
    assert "params.args.accelerator_config.option_025" in text
    assert "hidden" not in text


def test_kept_columns_are_hidden_last() -> None:
    """Verify that columns named in `keep` stay when the width hides others, in their place."""
    frame = wide_frame(columns=60)
    frame["val/acc:max"] = [0.5, 0.75, 0.875]
    text = render_table(frame, width=80, keep=["id", "val/acc:max"])
    head = header_text(text)
    assert "val/acc:" in head and head.split()[0] == "id"
    assert head.index("id") < head.index("val/acc:")
    assert "0.875" in text


@pytest.mark.parametrize(
    ("header", "width", "lines"),
    [
        ("params.optimizer", 16, ["params.optimizer"]),
        ("params.optimizer", 10, ["params.", "optimizer"]),
        ("val/acc:max", 8, ["val/acc:", "max"]),
        ("train_loss_epoch", 6, ["train_", "loss_", "epoch"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
    ],
)
def test_headers_wrap_at_separators(header: str, width: int, lines: list[str]) -> None:
    """Verify that a header wraps after . / : _ and is folded only when a piece is too long."""
    assert wrap_header(header, width) == lines


@pytest.mark.parametrize(
    ("text", "width", "fitted"),
    [("abcdef", 6, "abcdef"), ("abcdef", 4, "abc…"), ("日本語のテキスト", 7, "日本語…")],
)
def test_fit_text_counts_terminal_cells(text: str, width: int, fitted: str) -> None:
    """Verify that cutting counts wide characters as two cells."""
    assert fit_text(text, width) == fitted
    assert text_width(fit_text(text, width)) <= width


def test_wide_characters_and_control_characters_are_safe() -> None:
    """Verify that wide characters keep the borders aligned and control characters (escape
    sequences, newlines) never reach the terminal raw."""
    column = Column("name", ["日本語の名前", "evil\x1b[2Jname", "two\nlines"])
    fitted = layout([column, Column("n", ["1", "2", "3"], "number")], 80)
    assert len({text_width(line) for line in fitted.lines}) == 1
    assert "\x1b" not in "\n".join(fitted.lines)
    assert any("two↵lines" in line for line in fitted.lines)


def test_an_empty_result_says_so() -> None:
    """Verify that a result without rows prints its header and '(no rows)', not a bare grid."""
    text = render_table(pd.DataFrame({"id": pd.Series([], dtype="int64")}), width=80)
    assert "id" in text and text.endswith("(no rows)")
    assert render_table(pd.DataFrame(), width=80) == "(no rows)"


# -- one spelling per type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), None),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (pd.NA, None),
        (pd.NaT, None),
        (
            pd.Timestamp("2026-01-02 03:04:05.678912", tz="Europe/Berlin"),
            "2026-01-02T02:04:05.678Z",
        ),
        ({"a": [1.5, float("nan"), math.inf]}, {"a": [1.5, None, "Infinity"]}),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x00\xff", "\\x00ff"),
    ],
    ids=["nan", "inf", "-inf", "NA", "NaT", "time", "nested", "uuid", "bytes"],
)
def test_jsonable_spells_each_type_once(value: Any, expected: Any) -> None:
    """Verify that missing values, infinities, times and nested values have one JSON
    spelling."""
    assert jsonable(value) == expected


def test_cells_csv_and_json_agree() -> None:
    """Verify that a frame's tables, CSV and JSON spell times, booleans, lists and numbers
    alike: ISO-8601 UTC with milliseconds and Z, true/false, JSON text, Infinity."""
    frame = pd.DataFrame(
        {
            "at": pd.to_datetime([1_767_000_000_123, None], unit="ms", utc=True),
            "flag": [True, False],
            "tags": [["a/b", "ü"], []],
            "loss": [math.inf, float("nan")],
        }
    )
    rows = list(csv.DictReader(io.StringIO(to_csv(frame))))
    records = json.loads(to_json(frame))
    table = render_table(frame, width=None)
    stamp = "2025-12-29T09:20:00.123Z"
    assert rows[0] == {"at": stamp, "flag": "true", "tags": '["a/b", "ü"]', "loss": "Infinity"}
    assert rows[1] == {"at": "", "flag": "false", "tags": "[]", "loss": ""}
    assert records[0] == {"at": stamp, "flag": True, "tags": ["a/b", "ü"], "loss": "Infinity"}
    assert records[1] == {"at": None, "flag": False, "tags": [], "loss": None}
    assert "\\/" not in to_json(frame) and "\\u" not in to_json(frame)
    for text in (stamp, "true", '["a/b", "ü"]', "Infinity"):
        assert text in table
    assert cell(1.0 / 3) == "0.333333" and cell(None) == "" and cell(math.nan) == ""


def test_json_numbers_are_exact_and_keys_unique() -> None:
    """Verify that JSON floats keep every digit and repeated column names stay apart."""
    frame = pd.DataFrame([[0.1 + 0.2, 1, 2]], columns=["x", "id", "id"])
    assert json.loads(to_json(frame)) == [{"x": 0.30000000000000004, "id": 1, "id_2": 2}]
    assert json.loads(dumps({"t": pd.Timestamp(0, tz="UTC")})) == {"t": "1970-01-01T00:00:00.000Z"}


def log_run(tracker: sqltrack.Tracker) -> sqltrack.Run:
    """One finished run with tags, a list param, a key with a slash, NaN and ±inf."""
    run = tracker.start_run(
        "fmt", name="r/1", params={"lr": 0.5, "layers": [64, 32]}, tags=["base", "a/b"]
    )
    for step, loss in enumerate([0.5, math.nan, math.inf, -math.inf]):
        run.log({"val/loss": loss}, step=step)
    run.finish()
    return run


def test_every_format_spells_times_alike(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that runs, metrics and show write a time the same way in CSV, JSON and text:
    ISO-8601 UTC, milliseconds, Z."""
    run = log_run(tracker)
    runs_json = json.loads(invoke("runs", "--url", db_url, "--format", "json").stdout)[0]
    runs_csv = next(
        csv.DictReader(io.StringIO(invoke("runs", "--url", db_url, "--format", "csv").stdout))
    )
    show_json = json.loads(invoke("show", "--url", db_url, str(run.id), "--format", "json").stdout)
    show_text = invoke("show", "--url", db_url, str(run.id)).stdout
    for field in ("created_at", "started_at", "ended_at"):
        assert runs_json[field] == runs_csv[field] == show_json[field]
        assert pd.Series([runs_json[field]]).str.match(ISO_MS_Z).all(), runs_json[field]
    assert runs_json["started_at"] in show_text and runs_json["ended_at"] in show_text
    history = json.loads(invoke("metrics", "--url", db_url, str(run.id), "--format", "json").stdout)
    assert all(pd.Series([r["logged_at"] for r in history]).str.match(ISO_MS_Z))


def test_nan_and_infinity_are_spelled_alike(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that NaN is null and ±inf are "Infinity"/"-Infinity" in runs, metrics and show
    JSON, and the same words in CSV; no \\/ escapes."""
    run = log_run(tracker)
    history = invoke("metrics", "--url", db_url, str(run.id), "--format", "json").stdout
    assert "\\/" not in history and '"val/loss"' in history
    assert [r["val/loss"] for r in json.loads(history)] == [0.5, None, "Infinity", "-Infinity"]
    specs = ["-m", "val/loss:max", "-m", "val/loss:min", "-m", "val/loss:last"]
    [record] = json.loads(invoke("runs", "--url", db_url, *specs, "--format", "json").stdout)
    assert record["val/loss:max"] is None  # NaN (max of a series with NaN), written as missing
    assert record["val/loss:min"] is None or record["val/loss:min"] == "-Infinity"
    assert record["val/loss:last"] == "-Infinity"
    info = json.loads(invoke("show", "--url", db_url, str(run.id), "--format", "json").stdout)
    assert info["metrics"]["val/loss"]["last"] == "-Infinity"
    # the same NaN rule as runs: a NaN is the largest value, so the max is NaN (missing)
    assert info["metrics"]["val/loss"]["max"] is None is record["val/loss:max"]
    assert info["metrics"]["val/loss"]["min"] == record["val/loss:min"]
    rows = csv.DictReader(
        io.StringIO(invoke("metrics", "--url", db_url, str(run.id), "--format", "csv").stdout)
    )
    assert [r["val/loss"] for r in rows] == ["0.5", "", "Infinity", "-Infinity"]


def test_csv_writes_tags_and_params_as_json(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that CSV holds tags and list params as JSON text, not Python's repr."""
    log_run(tracker)
    [row] = csv.DictReader(io.StringIO(invoke("runs", "--url", db_url, "--format", "csv").stdout))
    assert json.loads(row["tags"]) == ["base", "a/b"]
    assert json.loads(row["params.layers"]) == [64, 32]
    [record] = json.loads(invoke("runs", "--url", db_url, "--format", "json").stdout)
    assert record["tags"] == ["base", "a/b"] and record["params.layers"] == [64, 32]


# -- every command fits ---------------------------------------------------------------------------


def wide_database(tracker: sqltrack.Tracker) -> sqltrack.Run:
    """Runs with 155 params (167 columns in `runs`) and a run with 164 metric keys."""
    for name in ("classifier", "classifier (resumed)"):
        tracker.start_run("hf-finetune", name=name, params=WIDE_PARAMS).finish()
    run = tracker.start_run("hf-finetune", name="many-metrics", params={"lr": 0.1})
    run.log({f"eval/metric_number_{i:03d}": i / 8 for i in range(164)}, step=0)
    run.finish()
    return run


@pytest.mark.parametrize("width", [80, 120])
def test_every_command_fits_the_terminal(
    tracker: sqltrack.Tracker, db_url: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that runs, metrics, show, lineage and sql fit $COLUMNS with 167 columns, and
    none prints an empty grid."""
    run = wide_database(tracker)
    monkeypatch.setenv("COLUMNS", str(width))
    wide_sql = "SELECT " + ", ".join(f"{i} AS column_number_{i:03d}" for i in range(167))
    commands = [
        ["runs", "-e", "hf-finetune"],
        ["runs", "-e", "hf-finetune", "--params"],
        ["metrics", str(run.id)],
        ["show", "1"],
        ["show", str(run.id)],
        ["lineage", "1"],
        ["sql", wide_sql],
        ["sql", "SELECT * FROM runs"],
    ]
    for args in commands:
        result = invoke(*args[:1], "--url", db_url, *args[1:])
        assert result.exit_code == 0, (args, result.output)
        assert_fits(result.stdout, width)
    show = invoke("show", "--url", db_url, "1").stdout
    assert "params (155)" in show and "model.architectures" in show and "…" in show


def test_piped_output_is_not_cut(
    tracker: sqltrack.Tracker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that without $COLUMNS and a terminal, tables keep every column whole."""
    wide_database(tracker)
    monkeypatch.delenv("COLUMNS", raising=False)
    wide_sql = "SELECT " + ", ".join(f"{i} AS column_number_{i:03d}" for i in range(167))
    result = invoke("sql", "--url", db_url, wide_sql)
    assert "column_number_166" in result.stdout and "hidden" not in result.stdout
    show = invoke("show", "--url", db_url, "1").stdout
    assert WIDE_PARAMS["note"].strip() in show


def test_url_on_the_group(tracker: sqltrack.Tracker, db_url: str, tmp_path: Path) -> None:
    """Verify that `sqltrack --url X runs` reads X, over $SQLTRACK_URL, and that a command's
    own --url wins over the group's."""
    log_run(tracker)
    other = f"sqlite:///{tmp_path}/other.db"
    for args, env in [
        (["--url", db_url, "runs", "--format", "json"], {"SQLTRACK_URL": other}),
        (["--url", other, "runs", "--url", db_url, "--format", "json"], {}),
        (["--url", db_url, "show", "1", "--format", "json"], {}),
    ]:
        result = invoke(*args, env=env)
        assert result.exit_code == 0, result.output
        found = json.loads(result.stdout)
        assert (found[0] if isinstance(found, list) else found)["name"] == "r/1"
    assert not (tmp_path / "other.db").exists()
    assert "--url" in invoke("--help").stdout


# -- a real terminal ------------------------------------------------------------------------------


def _tmux(*args: str, socket: str) -> str:
    done = subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_real_80_column_terminal(sqlite_url: str) -> None:
    """Verify that in tmux (an 80x40 terminal, no $COLUMNS) `runs` of 167 columns and `show`
    of 155 params fit the screen: no line wraps, the header is readable, hidden columns named."""
    with sqltrack.connect(sqlite_url) as tracker:
        wide_database(tracker)
    socket = f"sqltrack-test-{uuid.uuid4().hex[:8]}"
    base = [sys.executable, "-m", "sqltrack_core", "--url", sqlite_url]
    script = "; ".join(
        [
            shlex.join([*base, "runs", "-e", "hf-finetune", "--params"]),
            shlex.join([*base, "show", "1"]),
            "echo __done__; sleep 60",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    subprocess.run(
        ["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "40",
         f"env -u COLUMNS sh -c {shlex.quote(script)}"],
        env=env, timeout=30, check=True,
    )  # fmt: skip
    try:
        screen = ""
        deadline = time.monotonic() + 60
        while "__done__" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            # -J joins lines the terminal wrapped: a line too long shows as one long line
            screen = _tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "0", socket=socket)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], timeout=30, check=False)
    assert "__done__" in screen, screen
    output = "\n".join(line.rstrip() for line in screen.split("__done__")[0].splitlines())
    assert_fits(output, 80)
    assert "┃ id ┃" in output and "classifier (resumed)" in output
    assert "hidden to fit" in output and "params (155)" in output
    assert max(text_width(line) for line in output.splitlines()) > 70  # the width was used
