"""Readers: `runs` aggregations and filters, `metrics` frames, `lineage`, `run_info`, `query`."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import pytest

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, NotFoundError

AGGS = ["last", "first", "min", "max", "mean", "count"]
NAN = math.nan


def same(actual: Any, expected: Any) -> bool:
    """Equal, NaN equals NaN, None equals any missing value; floats compared closely."""
    if expected is None:
        return actual is None or bool(pd.isna(actual))
    if actual is None or (not isinstance(actual, str) and bool(pd.isna(actual))):
        return isinstance(expected, float) and math.isnan(expected)
    if isinstance(expected, bool):
        return bool(actual) is expected and not isinstance(actual, str)
    if isinstance(expected, float):
        return not math.isnan(expected) and float(actual) == pytest.approx(expected)
    return bool(actual == expected)


def pandas_aggregate(series: pd.Series, agg: str) -> Any:
    """What `agg` should give over one run's values ordered by step (missing values ignored)."""
    values = series.dropna()
    if agg == "count":
        return int(values.size)
    if values.empty:
        return None
    if agg == "last":
        return values.iloc[-1]
    if agg == "first":
        return values.iloc[0]
    return getattr(values.astype(float), agg)()


# -- runs(): aggregations ---------------------------------------------------------------------

KEYS = ["train/loss", "train/count", "val/acc", "lr"]


@pytest.fixture
def populated(tracker: sqltrack.Tracker) -> list[sqltrack.Run]:
    """Three runs in 'agg' (dense, sparse and partly missing metrics) and one in 'other'."""
    made = []
    for index in range(3):
        params = {"lr": 0.1 * (index + 1), "model": {"layers": index + 2, "act": "relu"}}
        with tracker.start_run("agg", name=f"r{index}", params=params) as run:
            for step in range(30):
                row: dict[str, Any] = {
                    "train/loss": ((step * 7 + index * 3) % 11) / (index + 1.5),
                    "train/count": (step * 13 + index) % 17 - 5,
                }
                if step % 10 == 0:  # sparse: every 10th step
                    row["val/acc"] = 0.5 + ((step + index) % 7) / 20
                if index == 0 and step >= 25:
                    row["lr"] = 0.001 * (30 - step)
                run.log(row, step=step)
        made.append(run)
    with tracker.start_run("other", name="o", params={"lr": 9.0}) as other:
        other.log({"train/loss": 100.0}, step=0)
    made.append(other)
    return made


@pytest.mark.parametrize("agg", AGGS)
def test_runs_aggregations_match_pandas(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run], agg: str
) -> None:
    """Verify that each aggregation computed in SQL equals pandas over tracker.metrics()."""
    df = tracker.runs("agg", metrics={key: agg for key in KEYS})
    ids = [run.id for run in populated[:3]]
    assert df["id"].tolist() == ids
    history = tracker.metrics(ids, KEYS)
    for run_id in ids:
        mine = history[history["run_id"] == run_id].sort_values("step")
        row = df[df["id"] == run_id].iloc[0]
        for key in KEYS:
            expected = pandas_aggregate(mine[key], agg)
            actual = row[f"{key}:{agg}"]
            assert same(actual, expected), (run_id, key, agg, actual, expected)


def test_runs_sparse_metric_last_and_count(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run]
) -> None:
    """Verify that last/first/count of a metric logged every 10th step skip the empty steps."""
    df = tracker.runs("agg", metrics=["val/acc:first", "val/acc:last", "val/acc:count"])
    for index in range(3):
        row = df.iloc[index]
        assert row["val/acc:count"] == 3
        assert row["val/acc:first"] == pytest.approx(0.5 + (index % 7) / 20)
        assert row["val/acc:last"] == pytest.approx(0.5 + ((20 + index) % 7) / 20)


def test_runs_missing_metric_is_empty(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run]
) -> None:
    """Verify that a run that never logged a key gets count 0 and missing values."""
    df = tracker.runs("agg", metrics=["lr:max", "lr:count", "lr:last"])
    assert df["lr:max"].iloc[0] == pytest.approx(0.005)
    assert df["lr:last"].iloc[0] == pytest.approx(0.001)
    assert df["lr:count"].tolist() == [5, 0, 0]
    assert df["lr:max"].iloc[1:].isna().all()
    assert df["lr:last"].iloc[1:].isna().all()


def test_runs_count_for_run_without_metrics(tracker: sqltrack.Tracker) -> None:
    """Verify that count is 0 and other aggregations missing for a run with no metric rows."""
    with tracker.start_run("empty") as logged:
        logged.log({"x": 1.0}, step=0)
    with tracker.start_run("empty"):
        pass
    df = tracker.runs("empty", metrics=["x:count", "x:max", "x:last"])
    assert df["x:count"].tolist() == [1, 0]
    assert df["x:max"].iloc[0] == 1.0
    assert df["x:last"].iloc[0] == 1.0
    assert pd.isna(df["x:max"].iloc[1])
    assert pd.isna(df["x:last"].iloc[1])


NAN_CASES = [
    # (id, values, {aggregation: expected}) -- PostgreSQL's NaN semantics on both backends
    (
        "one-nan",
        [1.0, NAN, 3.0],
        {"max": NAN, "min": 1.0, "mean": NAN, "first": 1.0, "last": 3.0, "count": 3},
    ),
    (
        "nan-last",
        [2.0, 0.5, NAN],
        {"max": NAN, "min": 0.5, "mean": NAN, "first": 2.0, "last": NAN, "count": 3},
    ),
    (
        "all-nan",
        [NAN, NAN],
        {"max": NAN, "min": NAN, "mean": NAN, "first": NAN, "last": NAN, "count": 2},
    ),
    (
        "no-nan",
        [2.0, -1.5, 4.0],
        {"max": 4.0, "min": -1.5, "mean": 1.5, "first": 2.0, "last": 4.0, "count": 3},
    ),
    (
        "inf-and-nan",
        [math.inf, NAN, -math.inf],
        {"max": NAN, "min": -math.inf, "mean": NAN, "count": 3},
    ),
    (
        "both-infinities",
        [math.inf, 1.0, -math.inf],
        {"max": math.inf, "min": -math.inf, "mean": NAN, "first": math.inf, "count": 3},
    ),
    (
        "one-infinity",
        [1.0, math.inf, 3.0],
        {"max": math.inf, "min": 1.0, "mean": math.inf, "last": 3.0, "count": 3},
    ),
]


@pytest.mark.parametrize("storage", ["column", "extra"])
@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in NAN_CASES], ids=[c[0] for c in NAN_CASES]
)
def test_runs_nan_semantics(
    db_url: str, storage: str, values: list[float], expected: dict[str, Any]
) -> None:
    """Verify that NaN and inf aggregate as on PostgreSQL, in a column or in metrics.extra."""
    # column_budget=1: 'seed' takes the only column, so 'm' lives in metrics.extra
    budget = {"column_budget": 1} if storage == "extra" else {}
    with sqltrack.connect(db_url, flush_interval=0.05, **budget) as tracker:
        with tracker.start_run("nan") as run:
            run.log({"seed": 0.5}, step=0)  # another float key first, so 'm' may start with NaN
            for step, value in enumerate(values, start=1):
                run.log({"m": value}, step=step)
        stored_in = tracker.query("SELECT key FROM metric_columns")["key"].tolist()
        assert ("m" in stored_in) is (storage == "column")
        df = tracker.runs("nan", metrics=[f"m:{agg}" for agg in expected])
    for agg, want in expected.items():
        got = df.loc[0, f"m:{agg}"]
        assert same(got, want), (agg, got, want)


SPARSE_CASES = [
    # (id, value of 'm' per step, None = logged as None; {aggregation: expected})
    (
        "nones-around",
        [None, 2.0, None, 5.5, None],
        {"first": 2.0, "last": 5.5, "count": 2, "min": 2.0, "max": 5.5, "mean": 3.75},
    ),
    ("all-none", [None, None], {"first": None, "last": None, "count": 0, "max": None}),
    ("text", [None, "a", None, "b", None], {"first": "a", "last": "b", "count": 2}),
]


@pytest.mark.parametrize("storage", ["column", "extra"])
@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in SPARSE_CASES], ids=[c[0] for c in SPARSE_CASES]
)
def test_runs_skip_steps_logged_as_none(
    db_url: str, storage: str, values: list[Any], expected: dict[str, Any]
) -> None:
    """Verify that steps that logged None are no value to first/last/count, in a column or extra."""
    budget = {"column_budget": 1} if storage == "extra" else {}
    with sqltrack.connect(db_url, flush_interval=0.05, **budget) as tracker:
        with tracker.start_run("none") as run:
            run.log({"seed": 0.5}, step=0)  # takes the only column when column_budget=1
            for step, value in enumerate(values, start=1):
                run.log({"seed": 1.0, "m": value}, step=step)
        df = tracker.runs(metrics=[f"m:{agg}" for agg in expected], where="r.id = ?", args=[run.id])
        history = tracker.metrics(run.id, ["m"])
        has_column = "m" in tracker.query("SELECT key FROM metric_columns")["key"].tolist()
    assert has_column is (storage == "column" and any(v is not None for v in values))
    assert int(history["m"].notna().sum()) == expected["count"]
    for agg, want in expected.items():
        got = df.loc[0, f"m:{agg}"]
        assert same(got, want), (agg, got, want)


BOOL_CASES = [
    # (id, values, max, min, mean)
    ("mixed", [True, False, True], True, False, 2 / 3),
    ("all-true", [True, True], True, True, 1.0),
    ("all-false", [False, False, False], False, False, 0.0),
]


@pytest.mark.parametrize(
    ("values", "high", "low", "mean"), [c[1:] for c in BOOL_CASES], ids=[c[0] for c in BOOL_CASES]
)
def test_runs_bool_metric(
    tracker: sqltrack.Tracker, values: list[bool], high: bool, low: bool, mean: float
) -> None:
    """Verify that max/min of a bool metric are bools (any/all) and mean is the true fraction."""
    with tracker.start_run("bool") as run:
        for step, value in enumerate(values):
            run.log({"flag": value}, step=step)
    df = tracker.runs("bool", metrics=["flag:max", "flag:min", "flag:mean", "flag:last"])
    row = df.iloc[0]
    for column, want in (("flag:max", high), ("flag:min", low), ("flag:last", values[-1])):
        got = row[column]
        assert str(got) == str(want), (column, got)  # a bool, not 1 or 0
    assert float(row["flag:mean"]) == pytest.approx(mean)


# -- runs(): params, column order, spec forms, filters ----------------------------------------


def test_runs_params_flattened(tracker: sqltrack.Tracker, populated: list[sqltrack.Run]) -> None:
    """Verify that nested params become dotted params.* columns with their values."""
    df = tracker.runs("agg")
    assert {"params.lr", "params.model.layers", "params.model.act"} <= set(df.columns)
    assert df["params.lr"].tolist() == pytest.approx([0.1, 0.2, 0.30000000000000004])
    assert df["params.model.layers"].tolist() == [2, 3, 4]
    assert df["params.model.act"].tolist() == ["relu"] * 3
    assert "params.model" not in df.columns


def test_runs_metric_columns_in_order_asked(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run]
) -> None:
    """Verify that aggregate columns come last, in the order they were asked for."""
    asked = {"val/acc": "max", "train/loss": "min", "train/count": "mean"}
    df = tracker.runs("agg", metrics=asked)
    assert list(df.columns[-3:]) == ["val/acc:max", "train/loss:min", "train/count:mean"]
    reverse = tracker.runs("agg", metrics=dict(reversed(list(asked.items()))))
    assert list(reverse.columns[-3:]) == ["train/count:mean", "train/loss:min", "val/acc:max"]


SPEC_FORMS = [
    # (id, metrics argument, expected columns)
    ("list", ["val/acc:max", "val/acc:last"], ["val/acc:max", "val/acc:last"]),
    ("tuples", [("val/acc", "max"), ("val/acc", "last")], ["val/acc:max", "val/acc:last"]),
    ("dict", {"val/acc": "max", "train/loss": "last"}, ["val/acc:max", "train/loss:last"]),
    ("single-str", "val/acc:max", ["val/acc:max"]),
    ("upper-case", ["val/acc:MAX"], ["val/acc:max"]),
    ("avg-alias", ["val/acc:avg"], ["val/acc:mean"]),
]


@pytest.mark.parametrize(
    ("spec", "columns"), [s[1:] for s in SPEC_FORMS], ids=[s[0] for s in SPEC_FORMS]
)
def test_runs_metric_spec_forms(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run], spec: Any, columns: list[str]
) -> None:
    """Verify that dict, 'key:agg' list, tuple list and single-string specs give the same columns."""
    df = tracker.runs("agg", metrics=spec)
    assert list(df.columns[-len(columns) :]) == columns
    reference = tracker.runs(
        "agg",
        metrics=[tuple(c.rsplit(":", 1)) for c in columns],  # type: ignore[misc]
    )
    for column in columns:
        assert df[column].tolist() == pytest.approx(reference[column].tolist())


def test_runs_list_form_values(tracker: sqltrack.Tracker, populated: list[sqltrack.Run]) -> None:
    """Verify that ['val/acc:max', 'val/acc:last'] gives the right values per run."""
    df = tracker.runs("agg", metrics=["val/acc:max", "val/acc:last"])
    for index in range(3):
        logged = [0.5 + ((step + index) % 7) / 20 for step in (0, 10, 20)]
        assert df["val/acc:max"].iloc[index] == pytest.approx(max(logged))
        assert df["val/acc:last"].iloc[index] == pytest.approx(logged[-1])


def test_runs_where_with_args(tracker: sqltrack.Tracker, populated: list[sqltrack.Run]) -> None:
    """Verify that where= with ? placeholders bound from args filters runs."""
    df = tracker.runs(where="r.name = ?", args=["r1"], metrics={"train/loss": "count"})
    assert df["id"].tolist() == [populated[1].id]
    assert df["train/loss:count"].tolist() == [30]
    both = tracker.runs("agg", where="r.name IN (?, ?)", args=["r0", "o"])
    assert both["id"].tolist() == [populated[0].id]


WHERE_CASES = [
    # (id, where, args, names of the runs expected)
    ("equals", "r.name = ?", ["r1"], ["r1"]),
    ("in-list", "r.name IN (?, ?)", ["r0", "o"], ["r0", "o"]),
    ("like-literal-percent", "r.name LIKE 'r%'", [], ["r0", "r1", "r2"]),
    ("like-bound-percent", "r.name LIKE ?", ["%2"], ["r2"]),
    ("status-and-id", "r.status = ? AND r.id > ?", ["completed", 0], ["r0", "r1", "r2", "o"]),
    ("no-match", "r.name = ?", ["nobody"], []),
]


@pytest.mark.parametrize(
    ("where", "args", "names"), [w[1:] for w in WHERE_CASES], ids=[w[0] for w in WHERE_CASES]
)
def test_runs_where_forms(
    tracker: sqltrack.Tracker,
    populated: list[sqltrack.Run],
    where: str,
    args: list[Any],
    names: list[str],
) -> None:
    """Verify that where= works with bound args and with a literal '%' on both backends."""
    df = tracker.runs(where=where, args=args, metrics=["train/loss:count"])
    assert df["name"].tolist() == names
    assert list(df.columns[-1:]) == ["train/loss:count"]


def test_runs_experiment_filter(tracker: sqltrack.Tracker, populated: list[sqltrack.Run]) -> None:
    """Verify that the experiment argument selects only that experiment's runs."""
    assert tracker.runs("agg")["id"].tolist() == [r.id for r in populated[:3]]
    assert tracker.runs("other")["id"].tolist() == [populated[3].id]
    assert tracker.runs()["id"].tolist() == [r.id for r in populated]
    with pytest.raises(NotFoundError, match="no experiment 'othr'; did you mean 'other'"):
        tracker.runs("othr")
    assert set(tracker.runs()["experiment"]) == {"agg", "other"}


BAD_SPECS = [
    # (id, metrics argument)
    ("unknown-agg", {"train/loss": "medain"}),
    ("unknown-agg-list", ["train/loss:p999"]),
    ("no-colon", ["train/loss"]),
    ("empty-key", [":max"]),
    ("three-tuple", [("train/loss", "max", "x")]),
    ("mean-of-text", {"note": "mean"}),
    ("max-of-json", {"blob": "max"}),
]


@pytest.mark.parametrize("spec", [b[1] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS])
def test_runs_bad_metric_spec_raises(tracker: sqltrack.Tracker, spec: Any) -> None:
    """Verify that an unknown aggregation, malformed spec or non-numeric mean raises ConfigurationError."""
    with tracker.start_run("bad") as run:
        run.log({"train/loss": 0.5, "note": "hello", "blob": {"a": 1}}, step=0)
    with pytest.raises(ConfigurationError):
        tracker.runs("bad", metrics=spec)


def test_runs_text_metric_last_and_count(tracker: sqltrack.Tracker) -> None:
    """Verify that a text metric supports last, first and count."""
    with tracker.start_run("text") as run:
        for step, word in enumerate(["a", "b", "c"]):
            run.log({"note": word}, step=step)
    df = tracker.runs("text", metrics=["note:first", "note:last", "note:count"])
    assert df.loc[0, ["note:first", "note:last", "note:count"]].tolist() == ["a", "c", 3]


def test_runs_aggregates_extra_key(db_url: str) -> None:
    """Verify that a key stored only in metrics.extra (over the column budget) aggregates."""
    with sqltrack.connect(db_url, flush_interval=0.05, column_budget=1) as tracker:
        with tracker.start_run("extra") as run:
            for step in range(4):
                run.log({"a": float(step), "b": step * 2.5}, step=step)
        mapping = tracker.query("SELECT key FROM metric_columns")["key"].tolist()
        assert mapping == ["a"]
        df = tracker.runs("extra", metrics=["b:max", "b:min", "b:last", "b:count", "b:mean"])
        row = df.iloc[0]
        assert float(row["b:max"]) == 7.5
        assert float(row["b:min"]) == 0.0
        assert float(row["b:last"]) == 7.5
        assert int(row["b:count"]) == 4
        assert float(row["b:mean"]) == pytest.approx(3.75)


# -- runs(): order_by and limit ---------------------------------------------------------------

#: run name -> the values of 'score' it logs, one per step (None: it never logs 'score')
SCORES: dict[str, list[float] | None] = {
    "a": [0.5],
    "b": [0.9, 0.2],
    "c": None,
    "d": [0.5],
    "e": [NAN],
    "f": [-math.inf, 0.1],
}

ORDERS = [
    # (order_by, names in the order expected): NaN above every number, missing values last
    # both ways, ties (a and d) by run id
    ("score:max", ["f", "a", "d", "b", "e", "c"]),
    ("-score:max", ["e", "b", "a", "d", "f", "c"]),
    ("score:min", ["f", "b", "a", "d", "e", "c"]),
    ("score:last", ["f", "b", "a", "d", "e", "c"]),
    ("-score:last", ["e", "a", "d", "b", "f", "c"]),
    ("score:first", ["f", "a", "d", "b", "e", "c"]),
    ("-score:first", ["e", "b", "a", "d", "f", "c"]),
    ("score:mean", ["f", "a", "d", "b", "e", "c"]),
    ("-score:mean", ["e", "b", "a", "d", "f", "c"]),
    ("score:count", ["c", "a", "d", "e", "b", "f"]),
    ("-score:count", ["b", "f", "a", "d", "e", "c"]),
    ("-score:AVG", ["e", "b", "a", "d", "f", "c"]),
    ("name", ["a", "b", "c", "d", "e", "f"]),
    ("-name", ["f", "e", "d", "c", "b", "a"]),
    ("-id", ["f", "e", "d", "c", "b", "a"]),
    (["experiment", "-score:max"], ["e", "b", "a", "d", "f", "c"]),
    (["-score:count", "-name"], ["f", "b", "e", "d", "a", "c"]),
]


def log_scores(url: str, storage: str) -> sqltrack.Tracker:
    """Log SCORES as runs of experiment 'rank', 'score' in a column or in metrics.extra."""
    # column_budget=1: 'seed', logged first by every run, takes the only column
    budget = {"column_budget": 1} if storage == "extra" else {}
    tracker = sqltrack.connect(url, flush_interval=0.05, **budget)
    for name, values in SCORES.items():
        with tracker.start_run("rank", name=name) as run:
            run.log({"seed": 0.5}, step=0)
            for step, value in enumerate(values or [], start=1):
                run.log({"score": value}, step=step)
    stored_in = tracker.query("SELECT key FROM metric_columns")["key"].tolist()
    assert ("score" in stored_in) is (storage == "column")
    return tracker


@pytest.mark.parametrize("storage", ["column", "extra"])
@pytest.mark.parametrize(("order_by", "names"), ORDERS, ids=[str(o[0]) for o in ORDERS])
def test_runs_order_by(db_url: str, storage: str, order_by: Any, names: list[str]) -> None:
    """Verify that order_by sorts by a metric spec or a column, either way, NULLs last."""
    with log_scores(db_url, storage) as tracker:
        df = tracker.runs(order_by=order_by)
        assert df["name"].tolist() == names
        assert not any(":" in str(c) for c in df.columns)  # sorting adds no column
        top = tracker.runs(order_by=order_by, limit=2)
        assert top["name"].tolist() == names[:2]


@pytest.mark.parametrize("storage", ["column", "extra"])
def test_runs_order_by_a_shown_metric(db_url: str, storage: str) -> None:
    """Verify that ordering by a spec also asked for in metrics keeps its values and columns."""
    with log_scores(db_url, storage) as tracker:
        df = tracker.runs(metrics=["score:last", "score:max"], order_by="-score:last", limit=3)
    assert df["name"].tolist() == ["e", "a", "d"]
    assert list(df.columns[-2:]) == ["score:last", "score:max"]
    assert math.isnan(df["score:last"].iloc[0])
    assert df["score:last"].iloc[1:].tolist() == [0.5, 0.5]


def test_runs_order_by_times(tracker: sqltrack.Tracker) -> None:
    """Verify that order_by takes started_at and ended_at, a run not ended coming last."""
    now = time.time()
    made = {}
    for name, started in (("late", now - 10), ("early", now - 30), ("middle", now - 20)):
        made[name] = tracker.start_run("times", name=name, started_at=started)
    made["early"].finish()
    time.sleep(0.01)  # SQLite keeps milliseconds: two finishes in one would tie
    made["late"].finish()
    try:
        assert tracker.runs(order_by="started_at")["name"].tolist() == ["early", "middle", "late"]
        assert tracker.runs(order_by="-started_at")["name"].tolist() == ["late", "middle", "early"]
        assert tracker.runs(order_by="-ended_at")["name"].tolist() == ["late", "early", "middle"]
        assert tracker.runs(order_by="ended_at")["name"].tolist() == ["early", "late", "middle"]
    finally:
        made["middle"].finish()


def test_runs_limit_with_filters(tracker: sqltrack.Tracker, populated: list[sqltrack.Run]) -> None:
    """Verify that limit cuts after experiment, where and ordering, and limit=0 is empty."""
    ids = [run.id for run in populated]
    assert tracker.runs(limit=2)["id"].tolist() == ids[:2]
    assert tracker.runs("agg", order_by="-id", limit=2)["id"].tolist() == [ids[2], ids[1]]
    assert tracker.runs(limit=100)["id"].tolist() == ids
    df = tracker.runs(
        where="r.name <> ?", args=["r2"], metrics=["val/acc:max"], order_by="-val/acc:max", limit=2
    )
    best = sorted(
        ((0.5 + max((s + i) % 7 for s in (0, 10, 20)) / 20, -ids[i]) for i in (0, 1)),
        reverse=True,
    )
    assert df["id"].tolist() == [-run_id for _, run_id in best]
    empty = tracker.runs("agg", metrics=["val/acc:max"], limit=0)
    assert empty.empty
    assert list(empty.columns[-1:]) == ["val/acc:max"]


BAD_ORDERS = [
    # (id, order_by, limit)
    ("unknown-column", "nope", None),
    ("frame-column", "step", None),
    ("param", "params.lr", None),
    ("empty", "", None),
    ("dash-only", "-", None),
    ("key-without-agg", "train/loss", None),
    ("unknown-agg", "train/loss:medain", None),
    ("empty-key", "-:max", None),
    ("not-a-str", 3, None),
    ("item-not-a-str", ["id", ("val/acc", "max")], None),
    ("json-last", "blob:last", None),
    ("negative-limit", None, -1),
    ("float-limit", None, 1.5),
    ("bool-limit", None, True),
    ("str-limit", None, "10"),
]


@pytest.mark.parametrize(
    ("order_by", "limit"), [b[1:] for b in BAD_ORDERS], ids=[b[0] for b in BAD_ORDERS]
)
def test_runs_bad_order_or_limit_raises(
    tracker: sqltrack.Tracker, order_by: Any, limit: Any
) -> None:
    """Verify that a bad order_by or limit raises ConfigurationError naming the value."""
    with tracker.start_run("bad") as run:
        run.log({"train/loss": 0.5, "blob": {"a": 1}}, step=0)
    with pytest.raises(ConfigurationError) as caught:
        tracker.runs(order_by=order_by, limit=limit)
    bad = order_by if limit is None else limit
    if isinstance(bad, list):
        bad = bad[-1]
    assert repr(bad) in str(caught.value)


# -- metrics() --------------------------------------------------------------------------------


def test_metrics_several_runs_naming_and_order(tracker: sqltrack.Tracker) -> None:
    """Verify that metrics() has one row per run and step, ordered, with a column per key."""
    with tracker.start_run("m") as first:
        for step in (5, 1, 3):
            first.log({"train/loss": step / 10, "val/acc": step / 100}, step=step)
    with tracker.start_run("m") as second:
        second.log({"train/loss": 0.9}, step=0)
        second.log({"epoch": 1}, step=1)
    df = tracker.metrics([second, first.id])
    assert list(df.columns) == ["run_id", "step", "logged_at", "train/loss", "val/acc", "epoch"]
    expected_rows = sorted(
        [(first.id, 1), (first.id, 3), (first.id, 5), (second.id, 0), (second.id, 1)]
    )
    assert list(zip(df["run_id"], df["step"], strict=True)) == expected_rows
    firsts = df[df["run_id"] == first.id]
    assert firsts["train/loss"].tolist() == pytest.approx([0.1, 0.3, 0.5])
    assert firsts["epoch"].isna().all()
    seconds = df[df["run_id"] == second.id]
    assert seconds["train/loss"].iloc[0] == 0.9
    assert pd.isna(seconds["train/loss"].iloc[1])
    assert seconds["epoch"].iloc[1] == 1
    assert str(df["logged_at"].dtype).startswith("datetime64")


def test_metrics_keys_filter_and_order(tracker: sqltrack.Tracker) -> None:
    """Verify that keys= selects those metrics in the order given, and that a key nothing
    ever logged is refused with a suggestion."""
    with tracker.start_run("m") as run:
        run.log({"a": 1, "b": 2.5, "c": "x"}, step=0)
    df = tracker.metrics(run.id, keys=["c", "a"])
    assert list(df.columns) == ["run_id", "step", "logged_at", "c", "a"]
    assert df.loc[0, "c"] == "x"
    assert df.loc[0, "a"] == 1
    with pytest.raises(NotFoundError, match="no metric key 'never'"):
        tracker.metrics(run.id, keys=["c", "never"])
    only_b = tracker.metrics([run], keys=["b"])
    assert list(only_b.columns) == ["run_id", "step", "logged_at", "b"]


def test_metrics_only_lists_keys_these_runs_logged(tracker: sqltrack.Tracker) -> None:
    """Verify that without keys, metrics() shows only keys the selected runs logged."""
    with tracker.start_run("m") as one:
        one.log({"a": 1.5}, step=0)
    with tracker.start_run("m") as two:
        two.log({"b": 2.5}, step=0)
    assert list(tracker.metrics(one).columns[3:]) == ["a"]
    assert list(tracker.metrics(two).columns[3:]) == ["b"]
    assert tracker.metrics([]).empty


def test_metrics_key_only_in_extra(db_url: str) -> None:
    """Verify that a key that went to metrics.extra (column_budget=1) reads back by its name."""
    with sqltrack.connect(db_url, flush_interval=0.05, column_budget=1) as tracker:
        with tracker.start_run("extra") as run:
            for step in range(3):
                run.log({"kept": step, "spill/over": step + 0.5}, step=step)
        df = tracker.metrics(run.id)
        assert list(df.columns[3:]) == ["kept", "spill/over"]
        assert df["spill/over"].tolist() == [0.5, 1.5, 2.5]
        assert df["kept"].tolist() == [0, 1, 2]
        only = tracker.metrics(run.id, keys=["spill/over"])
        assert list(only.columns[3:]) == ["spill/over"]
        assert only["spill/over"].tolist() == [0.5, 1.5, 2.5]


def test_metrics_rejects_bad_run_ids(tracker: sqltrack.Tracker) -> None:
    """Verify that a non-int run id raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        tracker.metrics(["1"])  # type: ignore[list-item]


# -- lineage ----------------------------------------------------------------------------------


@pytest.fixture
def chain(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """a <- b <- c: b finetuned_from a, c distilled_from b."""
    with tracker.start_run("lineage", name="a") as a:
        pass
    with tracker.start_run("lineage", name="b") as b:
        b.link("finetuned_from", a, evidence={"ckpt": "a.pt"})
    with tracker.start_run("lineage", name="c") as c:
        c.link("distilled_from", b)
    return {"a": a, "b": b, "c": c}


LINEAGE = [
    # (start, [(relation, depth, run name, kind, from name, to name)])
    (
        "a",
        [
            ("descendant", 1, "b", "finetuned_from", "b", "a"),
            ("descendant", 2, "c", "distilled_from", "c", "b"),
        ],
    ),
    (
        "b",
        [
            ("ancestor", 1, "a", "finetuned_from", "b", "a"),
            ("descendant", 1, "c", "distilled_from", "c", "b"),
        ],
    ),
    (
        "c",
        [
            ("ancestor", 1, "b", "distilled_from", "c", "b"),
            ("ancestor", 2, "a", "finetuned_from", "b", "a"),
        ],
    ),
]


@pytest.mark.parametrize(("start", "expected"), LINEAGE, ids=[f"from-{s}" for s, _ in LINEAGE])
def test_lineage_chain(
    tracker: sqltrack.Tracker,
    chain: dict[str, sqltrack.Run],
    start: str,
    expected: list[tuple[str, int, str, str, str, str]],
) -> None:
    """Verify that lineage() lists ancestors and descendants with depth and link kind."""
    ids = {name: run.id for name, run in chain.items()}
    df = tracker.lineage(chain[start])
    got = [
        (rel, int(depth), name, kind, int(src), int(dst))
        for rel, depth, name, kind, src, dst in df[
            ["relation", "depth", "name", "kind", "from_run_id", "to_run_id"]
        ].itertuples(index=False)
    ]
    assert got == [(rel, d, n, k, ids[s], ids[t]) for rel, d, n, k, s, t in expected]
    by_name = {name: run for name, run in chain.items()}
    for _, row in df.iterrows():
        assert row["run_id"] == by_name[row["name"]].id
        assert row["uuid"] == str(by_name[row["name"]].uuid)
        assert row["experiment"] == "lineage"
        assert row["status"] == "completed"


def test_lineage_with_a_cycle(tracker: sqltrack.Tracker) -> None:
    """Verify that runs linked both ways list each link once, never the run itself."""
    with tracker.start_run("cycle", name="a") as a:
        pass
    with tracker.start_run("cycle", name="b") as b:
        b.link("compared_with", a)
        a.link("compared_with", b)  # a finished run can still be linked
    with tracker.start_run("cycle", name="c") as c:
        c.link("finetuned_from", a)
    df = tracker.lineage(a)
    got = [
        (rel, int(depth), name, kind)
        for rel, depth, name, kind in df[["relation", "depth", "name", "kind"]].itertuples(
            index=False
        )
    ]
    assert got == [
        ("ancestor", 1, "b", "compared_with"),
        ("descendant", 1, "b", "compared_with"),
        ("descendant", 1, "c", "finetuned_from"),
    ]
    assert a.id not in df["run_id"].tolist()
    assert c.id in tracker.lineage(b)["run_id"].tolist()  # c descends from b through a


def test_lineage_accepts_id_and_uuid(
    tracker: sqltrack.Tracker, chain: dict[str, sqltrack.Run]
) -> None:
    """Verify that lineage() takes a run as id, uuid or uuid text, with evidence decoded."""
    b = chain["b"]
    frames = [tracker.lineage(ref) for ref in (b, b.id, b.uuid, str(b.uuid))]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    ancestor = frames[0][frames[0]["relation"] == "ancestor"].iloc[0]
    assert ancestor["evidence"] == {"ckpt": "a.pt"}


def test_lineage_of_unlinked_run_is_empty(tracker: sqltrack.Tracker) -> None:
    """Verify that a run without links has an empty lineage, and an unknown run raises."""
    with tracker.start_run("lineage") as run:
        pass
    assert tracker.lineage(run).empty
    with pytest.raises(NotFoundError):
        tracker.lineage(987654321)


# -- run_info, query --------------------------------------------------------------------------


def test_run_info(tracker: sqltrack.Tracker) -> None:
    """Verify that run_info() returns the row, params, env, links and a per-metric summary."""
    with tracker.start_run("info") as base:
        pass
    with tracker.start_run(
        "info", name="main", params={"lr": 0.5, "opt": {"name": "adam"}}, tags=["t"]
    ) as run:
        for step in range(4):
            run.log({"loss": 4.0 - step, "note": f"s{step}"}, step=step)
        run.log({"acc": 0.25}, step=10)
        run.link("baseline", base, evidence={"why": "compare"})
        run.comment = "hello"
    info = tracker.run_info(str(run.uuid))
    assert info["id"] == run.id
    assert info["uuid"] == str(run.uuid)
    assert info["experiment"] == "info"
    assert info["name"] == "main"
    assert info["status"] == "completed"
    assert info["tags"] == ["t"]
    assert info["comment"] == "hello"
    assert info["params.lr"] == 0.5
    assert info["params.opt.name"] == "adam"
    assert info["env"]["python"]
    assert info["links"] == [
        {"direction": "out", "kind": "baseline", "run_id": base.id, "evidence": {"why": "compare"}}
    ]
    summary = info["metrics"]
    assert set(summary) == {"loss", "note", "acc"}
    assert summary["loss"] == {"count": 4, "last": 1.0, "last_step": 3, "min": 1.0, "max": 4.0}
    assert summary["note"]["count"] == 4
    assert summary["note"]["last"] == "s3"
    assert summary["acc"]["last_step"] == 10
    with pytest.raises(NotFoundError):
        tracker.run_info(987654321)


def test_query_with_driver_placeholders(
    tracker: sqltrack.Tracker, populated: list[sqltrack.Run]
) -> None:
    """Verify that query() runs SQL with the driver's placeholders and returns a DataFrame."""
    df = tracker.query(
        "SELECT r.id, r.name FROM runs r JOIN experiments e ON e.id = r.experiment_id "
        "WHERE e.name = ? AND r.name <> ? ORDER BY r.id",
        ["agg", "r1"],
    )
    assert list(df.columns) == ["id", "name"]
    assert df["name"].tolist() == ["r0", "r2"]
    assert df["id"].tolist() == [populated[0].id, populated[2].id]
    empty = tracker.query("SELECT id FROM runs WHERE name = ?", ["nobody"])
    assert empty.empty
    assert list(empty.columns) == ["id"]


def test_where_names_run_columns_without_an_alias(tracker: sqltrack.Tracker) -> None:
    """Verify that `where` is a condition on runs alone: a bare `name` is the run's name, not
    ambiguous with the experiment's, and `r.` still works; the CLI takes it the same way."""
    from click.testing import CliRunner

    from sqltrack_core.cli import cli

    for name in ("base-1", "base-2", "other"):
        tracker.start_run("exp", name=name).finish()
    bare = tracker.runs(where="name LIKE ?", args=["base-%"])["name"].tolist()
    aliased = tracker.runs(where="r.name LIKE ?", args=["base-%"])["name"].tolist()
    assert bare == aliased == ["base-1", "base-2"]
    result = CliRunner().invoke(
        cli,
        [
            "runs",
            "--url",
            tracker.url,
            "--where",
            "name LIKE ?",
            "--arg",
            "base-%",
            "--format",
            "csv",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == ["1", "2"]
