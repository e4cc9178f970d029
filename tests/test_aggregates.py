"""Per-run aggregates of `Tracker.runs` beyond min/max/mean (argmax, argmin, at=STEP,
mean_last=K, percentiles) and unknown metric keys, on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, NotFoundError
from sqltrack_core._runs_query import build_runs_query, extra_keys, parse_metric_specs, parse_order
from sqltrack_core.cli import cli

NAN = math.nan
INF = math.inf
#: a step at which the key is not logged at all (the row exists: 'seed' is logged there)
SKIP = object()


def same(actual: Any, expected: Any) -> bool:
    """Equal; NaN equals NaN; None equals any missing value; floats compared closely."""
    if expected is None:
        return actual is None or bool(pd.isna(actual))
    if actual is None or pd.isna(actual):
        return isinstance(expected, float) and math.isnan(expected)
    if isinstance(expected, float) and math.isinf(expected):
        return float(actual) == expected
    if isinstance(expected, float):
        return not math.isnan(expected) and float(actual) == pytest.approx(expected, rel=1e-12)
    return bool(actual == expected) and not isinstance(actual, float | bool)


def log_values(
    url: str, storage: str, runs: dict[str, list[Any] | None], key: str = "m"
) -> sqltrack.Tracker:
    """A tracker with one run of experiment 'agg' per entry of `runs`: its values of `key` at
    steps 1, 2, ... (SKIP: not logged there; None: logged as None; a None list: never logged).
    Every run logs 'seed' at each step, first, so that with storage 'extra' (column_budget=1)
    'seed' takes the only column and `key` lives in metrics.extra."""
    budget = {"column_budget": 1} if storage == "extra" else {}
    tracker = sqltrack.connect(url, flush_interval=0.05, **budget)
    for name, values in runs.items():
        with tracker.start_run("agg", name=name) as run:
            run.log({"seed": 0.5}, step=0)
            for step, value in enumerate(values or [], start=1):
                run.log({"seed": 1.0} if value is SKIP else {"seed": 1.0, key: value}, step=step)
    return tracker


CASES = [
    # (id, values of 'm' at steps 1, 2, ...; {aggregate: expected})
    (
        "floats-with-a-tie",
        [0.5, 0.9, 0.2, 0.9, 0.4],
        {
            "argmax": 2,  # 0.9 at steps 2 and 4: the earliest
            "argmin": 3,
            "at=4": 0.9,
            "at=9": None,
            "mean_last=2": 0.65,
            "mean_last=9": 0.58,  # fewer values than K: all of them
            "p0": 0.2,
            "p10": 0.28,  # rank 0.4: 0.2 + 0.4 * (0.4 - 0.2)
            "median": 0.5,
            "p62.5": 0.7,  # rank 2.5: half way between 0.5 and 0.9
            "p90": 0.9,
            "p100": 0.9,
        },
    ),
    (
        "one-nan",
        [1.0, NAN, 3.0],
        {
            "argmax": 2,  # NaN orders above every number, as max says
            "argmin": 1,
            "at=2": NAN,
            "mean_last=1": 3.0,
            "mean_last=2": NAN,
            "p0": 1.0,
            "median": 3.0,  # rank 1 of [1, 3, NaN]
            "p75": NAN,  # between 3 and NaN
            "p100": NAN,
        },
    ),
    (
        "all-nan",
        [NAN, NAN],
        {"argmax": 1, "argmin": 1, "at=2": NAN, "mean_last=1": NAN, "p0": NAN, "median": NAN},
    ),
    (
        "infinities",
        [INF, 1.0, -INF],
        {
            "argmax": 1,
            "argmin": 3,
            "at=1": INF,
            "mean_last=2": -INF,
            "p25": NAN,  # between -inf and 1: -inf + 0.5 * (1 - -inf), as percentile_cont
            "median": 1.0,
            "p75": INF,  # between 1 and +inf
        },
    ),
    (
        "opposite-infinities",
        [-INF, INF],
        {"argmax": 2, "argmin": 1, "p0": -INF, "median": NAN, "p100": INF, "mean_last=2": NAN},
    ),
    # inf + 0.5 * (inf - inf), as percentile_cont; p0 and p100 take a rank, not a mix
    ("equal-infinities", [INF, INF], {"argmax": 1, "p0": INF, "median": NAN, "p100": INF}),
    (
        "nan-and-infinities",
        [INF, NAN, -INF],
        {"argmax": 2, "argmin": 3, "median": INF, "p75": NAN, "p100": NAN, "mean_last=3": NAN},
    ),
    (
        "gaps-and-nones",
        [SKIP, 2.0, None, 5.5, SKIP],
        {
            "argmax": 4,
            "argmin": 2,
            "at=1": None,  # not logged
            "at=3": None,  # logged as None
            "at=4": 5.5,
            "mean_last=1": 5.5,
            "mean_last=2": 3.75,
            "median": 3.75,
            "p0": 2.0,
        },
    ),
    (
        "ints",
        [3, 1, 4, 1, 5],
        {
            "argmax": 5,
            "argmin": 2,  # 1 at steps 2 and 4: the earliest
            "at=3": 4,
            "mean_last=2": 3.0,
            "p25": 1.0,
            "median": 3.0,
            "p90": 4.6,  # rank 3.6: 4 + 0.6 * (5 - 4)
        },
    ),
    ("single", [0.25], {"argmax": 1, "argmin": 1, "at=1": 0.25, "p37": 0.25, "mean_last=4": 0.25}),
    (
        "all-none",
        [None, None],
        {"argmax": None, "argmin": None, "at=1": None, "mean_last=2": None, "median": None},
    ),
]


@pytest.mark.parametrize("storage", ["column", "extra"])
@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in CASES], ids=[str(c[0]) for c in CASES]
)
def test_aggregates_table(
    db_url: str, storage: str, values: list[Any], expected: dict[str, Any]
) -> None:
    """Verify each aggregate's value, NaN, ±inf, gaps, Nones and ints included, in a column
    and in metrics.extra, against the rule in `_runs_query`'s docstring."""
    with log_values(db_url, storage, {"r": values}) as tracker:
        stored_in = tracker.query("SELECT key FROM metric_columns")["key"].tolist()
        df = tracker.runs("agg", metrics=[f"m:{agg}" for agg in expected])
    has_value = any(v is not SKIP and v is not None for v in values)
    assert ("m" in stored_in) is (storage == "column" and has_value)
    for agg, want in expected.items():
        [(_, canonical)] = parse_metric_specs([f"m:{agg}"])
        got = df.loc[0, f"m:{canonical}"]
        assert same(got, want), (agg, got, want)


def test_runs_without_the_key_or_without_metrics(tracker: sqltrack.Tracker) -> None:
    """Verify that a run that never logged the key, and a run with no metric rows at all, get
    missing values from every new aggregate while a run that logged it gets its own."""
    with tracker.start_run("some", name="logs-m") as run:
        run.log({"m": 2.0}, step=3)
        run.log({"m": 1.0}, step=7)
    with tracker.start_run("some", name="other-key") as run:
        run.log({"other": 1.0}, step=0)
    with tracker.start_run("some", name="nothing"):
        pass
    aggs = ["argmax", "argmin", "at=7", "mean_last=2", "p50", "count"]
    df = tracker.runs("some", metrics=[f"m:{agg}" for agg in aggs])
    first = df.iloc[0]
    assert [first[f"m:{agg}"] for agg in aggs] == [3, 7, 1.0, 1.5, 1.5, 2]
    for index in (1, 2):
        assert df.loc[index, "m:count"] == 0
        assert df.loc[index, [f"m:{agg}" for agg in aggs[:-1]]].isna().all()


def test_bool_metric_aggregates(tracker: sqltrack.Tracker) -> None:
    """Verify that argmax/argmin of a bool metric are the steps of its first True/False,
    at=STEP a bool, mean_last the fraction true; a percentile of bools is refused."""
    with tracker.start_run("bool") as run:
        for step, flag in enumerate([False, True, True, False]):
            run.log({"flag": flag}, step=step)
    aggs = ["argmax", "argmin", "at=2", "mean_last=2", "mean_last=3"]
    row = tracker.runs("bool", metrics=[f"flag:{a}" for a in aggs]).iloc[0]
    assert [row[f"flag:{a}"] for a in aggs[:2]] == [1, 0]
    assert str(row["flag:at=2"]) == "True"  # a bool, not 1
    assert row["flag:mean_last=2"] == pytest.approx(0.5)
    assert row["flag:mean_last=3"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigurationError, match=r"'p90' needs a numeric \(int or float\)"):
        tracker.runs("bool", metrics=["flag:p90"])


def test_aggregates_match_numpy_and_pandas(db_url: str) -> None:
    """Verify argmax, argmin, at, mean_last and percentiles over random histories with gaps
    equal pandas' idxmax/idxmin/tail().mean() and numpy.percentile (its default, linear)."""
    rng = random.Random(15)
    histories: dict[str, list[Any]] = {
        f"r{i}": [
            SKIP if rng.random() < 0.2 else rng.uniform(-5, 5) for _ in range(rng.randint(1, 60))
        ]
        for i in range(6)
    }
    aggs = ["argmax", "argmin", "at=5", "mean_last=7", "p0", "p12.5", "median", "p90", "p99.9"]
    with log_values(db_url, "column", histories) as tracker:
        df = tracker.runs("agg", metrics=[f"m:{agg}" for agg in aggs])
    for (name, values), (_, row) in zip(histories.items(), df.iterrows(), strict=True):
        series = pd.Series(
            {step: v for step, v in enumerate(values, start=1) if v is not SKIP}, dtype=float
        )
        if series.empty:
            assert row[[f"m:{a}" for a in aggs]].isna().all(), name
            continue
        expected = {
            "argmax": int(series.idxmax()),
            "argmin": int(series.idxmin()),
            "at=5": series.get(5),
            "mean_last=7": float(series.tail(7).mean()),
        }
        for agg, percent in (("p0", 0), ("p12.5", 12.5), ("p50", 50), ("p90", 90), ("p99.9", 99.9)):
            expected[agg] = float(np.percentile(series.to_numpy(), percent))
        for agg, want in expected.items():
            assert same(row[f"m:{agg}"], want), (name, agg, row[f"m:{agg}"], want)


def test_percentiles_equal_postgresql_percentile_cont(pg_url: str) -> None:
    """Verify that on PostgreSQL our portable percentile SQL gives exactly what
    percentile_cont does, NaN and ±inf included, for float and int metrics."""
    rng = random.Random(7)
    pool = [1.0, 2.5, -3.0, 0.1, INF, -INF, NAN]
    histories: dict[str, list[Any]] = {
        f"r{i}": [rng.choice(pool) for _ in range(rng.randint(1, 12))] for i in range(40)
    }
    percents = [0, 1, 25, 50, 66.6, 90, 99, 100]
    specs = [f"m:p{p}" for p in percents] + [f"n:p{p}" for p in percents]
    with log_values(pg_url, "column", histories) as tracker:
        with tracker.start_run("agg") as run:  # ints, read as float8 by percentile_cont
            for step in range(7):
                run.log({"n": rng.randint(-(2**62), 2**62)}, step=step)
        ours = tracker.runs("agg", metrics=specs)
        for key in ("m", "n"):
            for percent in percents:
                native = tracker.query(
                    f"SELECT r.id, (SELECT percentile_cont(?) WITHIN GROUP (ORDER BY {key}) "
                    f"FROM metrics WHERE run_id = r.id AND {key} IS NOT NULL) AS p "
                    "FROM runs r ORDER BY r.id",
                    [float(Decimal(str(percent)) / 100)],  # 66.6 / 100 is 0.6659999999999999
                )
                got, want = ours[f"{key}:p{percent}"].tolist(), native["p"].tolist()
                for a, b in zip(got, want, strict=True):
                    assert (pd.isna(a) and pd.isna(b)) or a == b, (key, percent, got, want)
                assert not all(pd.isna(got)), (key, percent)


#: run name -> values of 'score' at steps 1, 2, ... (None: it never logs 'score')
SCORES: dict[str, list[Any] | None] = {
    "a": [0.5, 0.0],
    "b": [0.9, NAN],
    "c": None,
    "d": [0.2, 0.8, 0.3],
    "e": [-INF],
}

ORDERS = [
    # (order_by, names in the order expected): NaN above every number, missing values last
    # both ways, ties by run id
    ("-score:p50", ["b", "d", "a", "e", "c"]),
    ("score:median", ["e", "a", "d", "b", "c"]),
    ("score:argmax", ["a", "e", "b", "d", "c"]),
    ("-score:argmax", ["b", "d", "a", "e", "c"]),
    ("score:argmin", ["b", "d", "e", "a", "c"]),
    ("-score:at=2", ["b", "d", "a", "c", "e"]),
    ("score:at=2", ["a", "d", "b", "c", "e"]),
    ("score:mean_last=2", ["e", "a", "d", "b", "c"]),
    ("-score:mean_last=2", ["b", "d", "a", "e", "c"]),
]


@pytest.mark.parametrize("storage", ["column", "extra"])
@pytest.mark.parametrize(("order_by", "names"), ORDERS, ids=[o[0] for o in ORDERS])
def test_order_by_new_aggregates(
    db_url: str, storage: str, order_by: str, names: list[str]
) -> None:
    """Verify that order_by sorts by each new aggregate either way, NaN above every number,
    missing values last, with or without the spec shown, in a column or in metrics.extra."""
    with log_values(db_url, storage, SCORES, key="score") as tracker:
        assert tracker.runs(order_by=order_by)["name"].tolist() == names
        spec = order_by.lstrip("-")
        shown = tracker.runs(metrics=[spec], order_by=order_by, limit=3)
        assert shown["name"].tolist() == names[:3]
        assert [c for c in shown.columns if ":" in c] == [
            f"score:{parse_metric_specs([spec])[0][1]}"
        ]


def test_filters_give_each_run_the_same_aggregates(db_url: str) -> None:
    """Verify that an experiment, a where filter and a limit select runs without changing the
    aggregates of those selected (table aggregates read only the selected runs' rows)."""
    specs = ["score:argmax", "score:argmin", "score:at=2", "score:mean_last=2", "score:p50"]
    with log_values(db_url, "column", SCORES, key="score") as tracker:
        with tracker.start_run("elsewhere", name="z") as run:
            run.log({"score": 5.0}, step=1)
        every = tracker.runs(metrics=specs).set_index("name")[specs]
        some = tracker.runs(where="r.name IN (?, ?)", args=["d", "z"], metrics=specs)
        one = tracker.runs("agg", metrics=specs, order_by="-score:argmax", limit=2)
    assert some["name"].tolist() == ["d", "z"] and one["name"].tolist() == ["b", "d"]
    for frame in (some, one):
        for _, row in frame.iterrows():
            for spec in specs:
                assert same(row[spec], every.loc[row["name"], spec]), (row["name"], spec)


def test_keys_with_colons_and_every_spec_form(tracker: sqltrack.Tracker) -> None:
    """Verify that a key containing ':' works in 'KEY:AGG' (split at the last colon), in
    (key, agg) pairs and in order_by, its columns named by the canonical spec."""
    for name, values in (("x", [0.1, 0.7, 0.4]), ("y", [0.9, 0.2])):
        with tracker.start_run("colons", name=name) as run:
            for step, value in enumerate(values):
                run.log({"eval:acc": value}, step=step * 100)
    df = tracker.runs(
        "colons",
        metrics=["eval:acc:MEDIAN", ("eval:acc", "argmax"), "eval:acc:at=0100"],
        order_by="-eval:acc:p50",
    )
    assert df["name"].tolist() == ["y", "x"]
    assert [c for c in df.columns if ":" in c] == [
        "eval:acc:p50",
        "eval:acc:argmax",
        "eval:acc:at=100",
    ]
    assert df["eval:acc:argmax"].tolist() == [0, 100]
    assert df["eval:acc:at=100"].tolist() == [0.2, 0.7]


# -- unknown metric keys ----------------------------------------------------------------------


def build(tracker: sqltrack.Tracker, metrics: list[str], order_by: str | None = None) -> Any:
    """What `Tracker.runs` builds, with the keys checked against the database (`extra_keys`)."""
    specs, order = parse_metric_specs(metrics), parse_order(order_by)
    columns = {
        key: (name, None)
        for key, name in tracker.query("SELECT key, column_name FROM metric_columns").values
    }
    found = extra_keys(tracker.backend, specs, order, columns)
    return build_runs_query(
        tracker.backend.dialect,
        specs=specs,
        order=order,
        columns=columns,
        stale=0,
        extra_keys=found,
    )


def test_extra_keys_finds_keys_kept_only_in_extra(db_url: str) -> None:
    """Verify that keys over the column budget (named whole, dots and '$' included) and one
    only ever logged as None are found in metrics.extra, so they are not unknown; that keys
    with columns cost no query; and that a typo of an extra key is suggested from there."""
    with log_values(db_url, "extra", {"r": [1.0, 2.0]}) as tracker:
        with tracker.start_run("agg") as run:
            run.log({"seed": 1.0, "only_none": None, "a.b": 1.0, "$x": 2.0}, step=0)
        asked = parse_metric_specs(["m:p50", "only_none:count", "a.b:max", "$x:max", "a:max"])
        found = extra_keys(tracker.backend, asked, [], {"seed": ("seed", "float")})
        assert {"m", "only_none", "a.b", "$x"} <= found and "a" not in found
        assert build(tracker, ["m:p50", "only_none:count"], "m:argmax").params
        with_columns = parse_metric_specs(["seed:max"])
        assert extra_keys(tracker.backend, with_columns, [], {"seed": ("seed", "float")}) == set()
        with pytest.raises(NotFoundError, match=r"^no metric key 'mm'; did you mean 'm'\?$"):
            build(tracker, ["mm:max"])


def test_extra_keys_with_path_characters_aggregate_as_named(db_url: str) -> None:
    """Verify that keys kept in metrics.extra whose names SQLite would read as a JSON path
    ('a.b' a nested key, '$x' an error, 'a[0]' an array element) aggregate by their whole name
    on both databases; a key with a double quote is refused on SQLite, naming it."""
    with log_values(db_url, "extra", {"r": [1.0, 2.0]}) as tracker:
        with tracker.start_run("paths") as run:
            for step, value in enumerate([1.0, 3.0, 2.0]):
                row = {"seed": 1.0, "a.b": value, "$x": -value, "a[0]": 10 * value}
                run.log({**row, 'q"k': value}, step=step)
        df = tracker.runs("paths", metrics=["a.b:max", "$x:min", "a[0]:argmax", "a.b:mean"])
        assert df.loc[0, ["a.b:max", "$x:min", "a[0]:argmax"]].tolist() == [3.0, -3.0, 1]
        assert df.loc[0, "a.b:mean"] == pytest.approx(2.0)
        if tracker.dialect == "sqlite":
            with pytest.raises(ConfigurationError, match="metric key 'q\"k' holds a double"):
                tracker.runs("paths", metrics=['q"k:max'])
        else:
            assert tracker.runs("paths", metrics=['q"k:max']).loc[0, 'q"k:max'] == 3.0


@pytest.mark.parametrize(
    ("metrics", "order_by", "message"),
    [
        (["val/accc:max"], None, r"^no metric key 'val/accc'; did you mean 'val/acc'\?$"),
        ([], "-val/accc:p90", r"^no metric key 'val/accc'; did you mean 'val/acc'\?$"),
        (["trian/loss:argmax"], None, r"^no metric key 'trian/loss'; did you mean 'train/loss'"),
        (["loss:argmax"], None, r"^no metric key 'loss'; known: 'train/loss', 'val/acc'$"),
    ],
    ids=["metrics", "order-by", "typo", "none-close"],
)
def test_unknown_keys_raise_not_found(
    tracker: sqltrack.Tracker, metrics: list[str], order_by: str | None, message: str
) -> None:
    """Verify that runs() refuses a key no run logged, naming close known keys, in metrics
    and in order_by."""
    with tracker.start_run("keys") as run:
        run.log({"val/acc": 0.5, "train/loss": 1.0}, step=0)
    with pytest.raises(NotFoundError, match=message):
        build(tracker, metrics, order_by)
    with pytest.raises(NotFoundError, match=message):
        tracker.runs(metrics=metrics, order_by=order_by)


def test_a_key_nobody_logged_yet_is_unknown(tracker: sqltrack.Tracker) -> None:
    """Verify that in a database where no run logged anything every key is unknown."""
    with tracker.start_run("empty"):
        pass
    with pytest.raises(NotFoundError, match=r"^no metric key 'val/acc'; there are none$"):
        tracker.runs(metrics=["val/acc:max"])


def test_cli_names_an_unknown_key_and_shows_new_aggregates(db_url: str) -> None:
    """Verify that `sqltrack runs -m` prints a new aggregate's column, and an unknown key is
    one line on stderr with a suggestion and exit status 1."""
    with log_values(db_url, "column", {"r": [0.25, 0.75, 0.5]}, key="val/acc"):
        pass
    runner = CliRunner()
    shown = runner.invoke(
        cli,
        ["runs", "--url", db_url, "-m", "val/acc:argmax", "-m", "val/acc:p50", "--format", "csv"],
    )
    assert shown.exit_code == 0, shown.output
    header, row = shown.stdout.splitlines()[:2]
    assert header.split(",")[-2:] == ["val/acc:argmax", "val/acc:p50"]
    assert row.split(",")[-2:] == ["2", "0.5"]  # 0.75, logged at step 2
    missing = runner.invoke(cli, ["runs", "--url", db_url, "-m", "val/accc:max"])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "Error: no metric key 'val/accc'; did you mean 'val/acc'?"
