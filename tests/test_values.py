"""Logged values and keys round-trip through typed columns on both backends."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from _schema import RECORDED_TYPES, TABLE_TYPES, metric_columns, table_columns

import sqltrack_core as sqltrack
from sqltrack_core import MetricTypeError

HOSTILE_KEY = 'x"; DROP TABLE runs; --'
LONG_A = "a" * 63 + "x" * 7  # two 70-character keys that share their first 63 bytes
LONG_B = "a" * 63 + "y" * 7


def table_exists(tracker: sqltrack.Tracker, name: str) -> bool:
    if tracker.dialect == "sqlite":
        df = tracker.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [name]
        )
    else:
        df = tracker.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ?",
            [name],
        )
    return len(df) == 1


def label(key: str) -> str:
    """The metrics() frame column of `key`: a key named like a frame column gets a "_"."""
    return key + "_" if key in ("run_id", "step", "logged_at") else key


def cell(df: pd.DataFrame, step: int, key: str) -> Any:
    rows = df.loc[df["step"] == step, label(key)]
    assert len(rows) == 1, f"step {step} has {len(rows)} rows"
    return rows.iloc[0]


def assert_same(actual: Any, expected: Any) -> None:
    """Equal values of the same Python kind; NaN equals NaN."""
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, (float, np.floating)) and math.isnan(actual), actual
        return
    if isinstance(expected, bool):
        assert isinstance(actual, (bool, np.bool_)) and bool(actual) is expected, actual
        return
    if isinstance(expected, int):
        assert isinstance(actual, (int, np.integer)) and not isinstance(actual, (bool, np.bool_))
        assert int(actual) == expected
        return
    if isinstance(expected, float):
        assert isinstance(actual, (float, np.floating)), actual
        assert float(actual) == expected
        return
    assert type(actual) is type(expected), (actual, expected)
    assert actual == expected


VALUES = [
    # (id, logged value, value read back, family)
    ("int", 3, 3, "int"),
    ("int-zero", 0, 0, "int"),
    ("int-min", -(2**63), -(2**63), "int"),
    ("int-max", 2**63 - 1, 2**63 - 1, "int"),
    ("float", 2.5, 2.5, "float"),
    ("float-tiny", 5e-324, 5e-324, "float"),
    ("float-huge", -1.7976931348623157e308, -1.7976931348623157e308, "float"),
    ("bool-true", True, True, "bool"),
    ("bool-false", False, False, "bool"),
    ("str", "héllo ✓ 'quoted' \"x\"", "héllo ✓ 'quoted' \"x\"", "text"),
    ("str-empty", "", "", "text"),
    ("str-nan", "NaN", "NaN", "text"),
    (
        "dict",
        {"a": [1, 2.5, None], "b": {"c": "x"}, "t": True},
        {"a": [1, 2.5, None], "b": {"c": "x"}, "t": True},
        "json",
    ),
    (
        "dict-nonfinite",
        {"hi": math.inf, "lo": -math.inf},
        {"hi": math.inf, "lo": -math.inf},
        "json",
    ),
    ("list", [1, "two", 3.0, False, None], [1, "two", 3.0, False, None], "json"),
    ("tuple", (1, 2), [1, 2], "json"),
    ("list-numpy", [np.float64(0.5), np.int64(2)], [0.5, 2], "json"),
    ("nan", math.nan, math.nan, "float"),
    ("inf", math.inf, math.inf, "float"),
    ("-inf", -math.inf, -math.inf, "float"),
    ("np-float32", np.float32(0.1), float(np.float32(0.1)), "float"),
    ("np-float64", np.float64(0.25), 0.25, "float"),
    ("np-float64-nan", np.float64("nan"), math.nan, "float"),
    ("np-int64", np.int64(7), 7, "int"),
    ("np-int32", np.int32(-5), -5, "int"),
    ("np-bool", np.bool_(True), True, "bool"),
    ("np-str", np.str_("abc"), "abc", "text"),
    ("torch-float", torch.tensor(1.25), 1.25, "float"),
    ("torch-float-inf", torch.tensor(float("-inf")), -math.inf, "float"),
    ("torch-int", torch.tensor(4), 4, "int"),
    ("torch-bool", torch.tensor(True), True, "bool"),
    ("torch-0d-array", np.array(3.5), 3.5, "float"),
]


@pytest.mark.parametrize(
    ("value", "expected", "family"),
    [v[1:] for v in VALUES],
    ids=[v[0] for v in VALUES],
)
def test_value_round_trip(
    tracker: sqltrack.Tracker, value: Any, expected: Any, family: str
) -> None:
    """Verify that a logged value reads back exactly and gets the column type of its family."""
    with tracker.start_run("values") as run:
        run.log({"v": value, "other": 1}, step=0)
        run.log({"other": 2}, step=1)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1]
    assert_same(cell(df, 0, "v"), expected)
    assert pd.isna(cell(df, 1, "v"))
    sqlite = tracker.dialect == "sqlite"
    column, sql_type = metric_columns(tracker)["v"]
    assert sql_type == RECORDED_TYPES[family][0 if sqlite else 1]
    assert table_columns(tracker)[column] == TABLE_TYPES[family][0 if sqlite else 1]
    assert tracker.query("SELECT count(*) FROM metrics WHERE extra IS NOT NULL").iloc[0, 0] == 0


def test_none_is_missing(tracker: sqltrack.Tracker) -> None:
    """Verify that None is stored as missing, beside real values of the same key."""
    with tracker.start_run("values") as run:
        run.log({"a": 1.5, "b": None}, step=0)
        run.log({"a": None, "b": None}, step=1)
        run.log({"a": 2.5}, step=2)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1, 2]
    assert cell(df, 0, "a") == 1.5
    assert pd.isna(cell(df, 1, "a"))
    assert cell(df, 2, "a") == 2.5
    assert "b" not in df.columns or df["b"].isna().all()


def test_nan_only_column_is_reported(tracker: sqltrack.Tracker) -> None:
    """Verify that a key whose only values are NaN still appears in metrics() as NaN."""
    with tracker.start_run("values") as run:
        run.log({"n": math.nan, "x": 1}, step=0)
        run.log({"x": 2}, step=1)
    df = tracker.metrics(run.id)
    assert "n" in df.columns
    assert math.isnan(cell(df, 0, "n"))


KEY_GROUPS = [
    ("slash", ["train/loss"]),
    ("slash-vs-underscore", ["val/acc", "val_acc"]),
    ("underscore-vs-slash", ["val_acc", "val/acc"]),
    ("case", ["Loss", "loss"]),
    ("long-63-bytes", [LONG_A, LONG_B]),
    ("hostile", [HOSTILE_KEY]),
    ("fixed-names", ["step", "run_id", "extra", "logged_at"]),
    ("reserved", ["order", "select", "user", "group"]),
    ("unicode", ["精度", "Größe", "ﬁne", "é/😀"]),
    ("quotes", ["it's", 'say "hi"', "back\\slash", "semi;colon"]),
    ("leading-digit", ["1st", "2nd/acc"]),
]


@pytest.mark.parametrize("keys", [g[1] for g in KEY_GROUPS], ids=[g[0] for g in KEY_GROUPS])
def test_keys_get_distinct_columns(tracker: sqltrack.Tracker, keys: list[str]) -> None:
    """Verify that every key gets its own SQL-friendly column and reads back under its own name."""
    with tracker.start_run("keys") as run:
        run.log({key: float(i) + 0.5 for i, key in enumerate(keys)}, step=0)
        run.log({key: i * 10 for i, key in enumerate(keys)}, step=1)
    mapping = metric_columns(tracker)
    assert set(mapping) == set(keys)
    columns = [c for c, _ in mapping.values()]
    assert len(set(columns)) == len(keys)
    table = table_columns(tracker)
    for column in columns:
        assert re.match(r"^[a-z_][a-z0-9_]*$", column), column
        assert len(column.encode()) <= 63
        assert column not in ("run_id", "step", "logged_at", "extra")
        assert column in table
    assert set(table) == {"run_id", "step", "logged_at", "extra", *columns}
    df = tracker.metrics(run.id)
    assert set(df.columns) == {"run_id", "step", "logged_at", *map(label, keys)}
    for i, key in enumerate(keys):
        assert cell(df, 0, key) == float(i) + 0.5
        assert cell(df, 1, key) == i * 10


@pytest.mark.parametrize("keys", [g[1] for g in KEY_GROUPS], ids=[g[0] for g in KEY_GROUPS])
def test_keys_across_runs_share_columns(tracker: sqltrack.Tracker, keys: list[str]) -> None:
    """Verify that a second run logging the same keys reuses the columns of the first."""
    with tracker.start_run("keys") as first:
        first.log(dict.fromkeys(keys, 1.0), step=0)
    before = metric_columns(tracker)
    with tracker.start_run("keys") as second:
        second.log(dict.fromkeys(reversed(keys), 2.0), step=0)
    assert metric_columns(tracker) == before
    df = tracker.metrics([first.id, second.id])
    for key in keys:
        assert list(df[label(key)]) == [1.0, 2.0]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["step"], ["step_"]),
        (["step", "step_"], ["step__", "step_"]),
        (["run_id", "logged_at", "extra"], ["run_id_", "logged_at_", "extra"]),
    ],
    ids=repr,
)
def test_keys_named_like_frame_columns(
    tracker: sqltrack.Tracker, keys: list[str], expected: list[str]
) -> None:
    """Verify that keys named like metrics() frame columns keep the frame unambiguous."""
    with tracker.start_run("keys") as run:
        run.log({key: i + 100 for i, key in enumerate(keys)}, step=7)
    df = tracker.metrics(run.id)
    assert list(df.columns[:3]) == ["run_id", "step", "logged_at"]
    assert sorted(df.columns[3:]) == sorted(expected)
    assert df.loc[0, "step"] == 7
    assert df.loc[0, "run_id"] == run.id
    assert [df.loc[0, e] for e in expected] == [i + 100 for i in range(len(keys))]
    picked = tracker.metrics(run.id, keys=keys)
    assert list(picked.columns) == ["run_id", "step", "logged_at", *expected]


def test_hostile_key_is_just_a_column(tracker: sqltrack.Tracker) -> None:
    """Verify that a key written as SQL injection is stored as a plain column and drops nothing."""
    with tracker.start_run("hostile") as run:
        run.log({HOSTILE_KEY: 1.5, "ok": 1}, step=0)
    assert table_exists(tracker, "runs")
    assert table_exists(tracker, "metrics")
    assert len(tracker.query("SELECT id FROM runs")) == 1
    assert metric_columns(tracker)[HOSTILE_KEY][0] == "x_drop_table_runs"
    df = tracker.metrics(run.id)
    assert cell(df, 0, HOSTILE_KEY) == 1.5
    summary = tracker.runs(metrics={HOSTILE_KEY: "max"})
    assert summary[f"{HOSTILE_KEY}:max"].tolist() == [1.5]


@pytest.mark.parametrize("flush_between", [False, True], ids=["one-batch", "two-batches"])
def test_steps_out_of_order(tracker: sqltrack.Tracker, flush_between: bool) -> None:
    """Verify that steps logged out of order are all kept and read back sorted."""
    steps = [5, 1, 3, 0, 2, 100, 4]
    with tracker.start_run("order") as run:
        for i, step in enumerate(steps):
            run.log({"s": step * 10, "i": i}, step=step)
            if flush_between and i == 2:
                assert run.flush(timeout=30)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == sorted(steps)
    assert list(df["s"]) == [s * 10 for s in sorted(steps)]
    assert sorted(df["i"]) == list(range(len(steps)))


@pytest.mark.parametrize("flush_between", [False, True], ids=["one-batch", "two-batches"])
def test_same_step_twice_merges(tracker: sqltrack.Tracker, flush_between: bool) -> None:
    """Verify that logging a step twice merges its columns, the later value winning."""
    with tracker.start_run("merge") as run:
        run.log({"a": 1, "b": 2.5, "c": "first"}, step=3)
        run.log({"z": 0}, step=4)
        if flush_between:
            assert run.flush(timeout=30)
        run.log({"a": 10, "d": True, "c": "second"}, step=3)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [3, 4]
    assert cell(df, 3, "a") == 10
    assert cell(df, 3, "b") == 2.5
    assert cell(df, 3, "c") == "second"
    assert bool(cell(df, 3, "d")) is True
    assert cell(df, 4, "z") == 0


@pytest.mark.parametrize("flush_between", [False, True], ids=["one-batch", "two-batches"])
def test_none_does_not_erase_earlier_value_of_step(
    tracker: sqltrack.Tracker, flush_between: bool
) -> None:
    """Verify that logging None for a key at a step keeps the value logged there before."""
    with tracker.start_run("merge") as run:
        run.log({"a": 1.5, "b": 1}, step=0)
        if flush_between:
            assert run.flush(timeout=30)
        run.log({"a": None, "b": 2}, step=0)
    df = tracker.metrics(run.id)
    assert cell(df, 0, "a") == 1.5
    assert cell(df, 0, "b") == 2


def test_default_step_continues_after_last(tracker: sqltrack.Tracker) -> None:
    """Verify that log() without a step uses one past the highest step logged so far."""
    with tracker.start_run("steps") as run:
        run.log({"a": 1})
        run.log({"a": 2}, step=10)
        run.log({"a": 3}, step=4)
        run.log({"a": 4})
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 4, 10, 11]
    assert list(df["a"]) == [1, 3, 2, 4]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(np.int64(7), 7), (torch.tensor(8), 8), (2**63 - 1, 2**63 - 1), (-(2**63), -(2**63))],
    ids=["np-int64", "torch-int", "max", "min"],
)
def test_step_types_accepted(tracker: sqltrack.Tracker, step: Any, expected: int) -> None:
    """Verify that integer-like steps (numpy, 0-d tensors, the int64 range) are accepted."""
    with tracker.start_run("steps") as run:
        run.log({"a": 1}, step=step)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [expected]


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


BAD_VALUES = [
    ("object", object(), r"'bad'.*builtins\.object"),
    ("custom-class", Opaque(), r"'bad'.*Opaque"),
    ("tensor-2", torch.tensor([1.0, 2.0]), r"'bad'.*torch\.Tensor"),
    ("ndarray-2", np.array([1, 2]), r"'bad'.*numpy\.ndarray"),
    ("set", {1, 2}, r"'bad'.*set"),
    ("bytes", b"raw", r"'bad'.*bytes"),
    ("nested-object", {"inner": [object()]}, r"'bad'\['inner'\]\[0\].*object"),
    ("dict-int-key", {1: "x"}, r"'bad'.*dict key 1"),
    ("function", len, r"'bad'.*builtin_function_or_method"),
]


@pytest.mark.parametrize(
    ("value", "match"), [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES]
)
def test_unloggable_value_raises(tracker: sqltrack.Tracker, value: Any, match: str) -> None:
    """Verify that an unloggable value raises MetricTypeError (a TypeError) naming key and type."""
    with tracker.start_run("bad") as run:
        run.log({"good": 1.0}, step=0)
        with pytest.raises(MetricTypeError, match=match) as info:
            run.log({"good": 2.0, "bad": value}, step=1)
        assert isinstance(info.value, TypeError)
        run.log({"good": 3.0}, step=2)
    assert run.status is sqltrack.RunStatus.COMPLETED
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 2]  # the failing call logged nothing, not even "good"
    assert list(df["good"]) == [1.0, 3.0]
    assert "bad" not in metric_columns(tracker)


BAD_KEYS = [
    ("int-key", 1, r"metric key 1 is a int"),
    ("none-key", None, r"metric key None is a NoneType"),
    ("empty-key", "", r"metric key '' is a str; expected a non-empty str"),
    ("tuple-key", ("a", "b"), r"metric key \('a', 'b'\) is a tuple"),
]


@pytest.mark.parametrize(("key", "match"), [b[1:] for b in BAD_KEYS], ids=[b[0] for b in BAD_KEYS])
def test_bad_key_raises(tracker: sqltrack.Tracker, key: Any, match: str) -> None:
    """Verify that a key that is not a non-empty str raises MetricTypeError naming it."""
    with tracker.start_run("bad") as run:
        run.log({"good": 1}, step=0)
        with pytest.raises(MetricTypeError, match=match):
            run.log({key: 1.0}, step=1)
        run.log({"good": 2}, step=2)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 2]
    assert list(df["good"]) == [1, 2]


BAD_STEPS = [
    ("float", 1.5, r"step 1\.5 is a float"),
    ("integral-float", 3.0, r"step 3\.0 is a float"),
    ("str", "3", r"step '3' is a str"),
    ("bool", True, r"step True is a bool"),
    ("np-float", np.float64(2.0), r"step 2\.0 is a float"),
    ("too-big", 2**63, r"step 9223372036854775808 is out of range"),
    ("too-small", -(2**63) - 1, r"out of range"),
    ("list", [1], r"step \[1\] is a list"),
]


@pytest.mark.parametrize(
    ("step", "match"), [b[1:] for b in BAD_STEPS], ids=[b[0] for b in BAD_STEPS]
)
def test_bad_step_raises(tracker: sqltrack.Tracker, step: Any, match: str) -> None:
    """Verify that a step that is not a 64-bit int raises MetricTypeError naming it."""
    with tracker.start_run("bad") as run:
        run.log({"good": 1}, step=0)
        with pytest.raises(MetricTypeError, match=match) as info:
            run.log({"good": 5}, step=step)
        assert isinstance(info.value, TypeError)
        run.log({"good": 2})
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1]
    assert list(df["good"]) == [1, 2]


@pytest.mark.parametrize("metrics", [[("a", 1)], "a=1", 1.5, None], ids=repr)
def test_metrics_not_a_mapping_raises(tracker: sqltrack.Tracker, metrics: Any) -> None:
    """Verify that log() with something other than a dict raises MetricTypeError."""
    with tracker.start_run("bad") as run, pytest.raises(MetricTypeError, match="expected a dict"):
        run.log(metrics, step=0)
