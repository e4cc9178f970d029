"""Column selection in `Tracker.runs` and ``sqltrack runs``: params by name and glob, in
order; ``varying``; unknown experiments and params; a short default table that fits 80 columns
even for 2,000 runs with 300 params."""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core._selection import PREFIX, choose, flatten
from sqltrack_core.cli import cli
from sqltrack_core.cli._table import text_width
from sqltrack_core.errors import ConfigurationError, NotFoundError

#: params of the runs of experiment "sweep": lr and batch are swept, optim.name is the same,
#: warmup is set in one run only, seed differs in every run
SWEEP = [
    {"lr": 0.001, "batch": 32, "optim": {"name": "adam", "beta1": 0.9}, "seed": 1},
    {"lr": 0.0003, "batch": 64, "optim": {"name": "adam", "beta1": 0.95}, "seed": 2},
    {"lr": 0.001, "batch": 64, "optim": {"name": "adam", "beta1": 0.9}, "seed": 3, "warmup": 10},
]


def log_sweep(tracker: sqltrack.Tracker, experiment: str = "sweep") -> list[sqltrack.Run]:
    """Log SWEEP as finished runs of `experiment`, with a val/acc history each."""
    runs = []
    for i, params in enumerate(SWEEP):
        with tracker.start_run(experiment, name=f"r{i}", params=params) as run:
            run.log({"val/acc": 0.5 + i / 8}, step=0)
        runs.append(run)
    return runs


def param_columns(df: Any) -> list[str]:
    return [c for c in df.columns if c.startswith(PREFIX)]


def invoke(*args: str, columns: int | None = None) -> Result:
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


SELECTIONS = [
    # (params argument, the param columns expected, in order)
    (None, ["batch", "lr", "optim.beta1", "optim.name", "seed", "warmup"]),
    ([], []),
    (["lr"], ["lr"]),
    ("lr", ["lr"]),
    (["seed", "lr"], ["seed", "lr"]),
    (["optim.*"], ["optim.beta1", "optim.name"]),
    (["lr", "optim.*", "batch"], ["lr", "optim.beta1", "optim.name", "batch"]),
    (["optim.name", "optim.*"], ["optim.name", "optim.beta1"]),
    (["*"], ["batch", "lr", "optim.beta1", "optim.name", "seed", "warmup"]),
    (["?atch", "[lw]*"], ["batch", "lr", "warmup"]),
    (["params.lr", "params.optim.*"], ["lr", "optim.beta1", "optim.name"]),
    (["nothing.*"], []),
]


@pytest.mark.parametrize(("params", "expected"), SELECTIONS, ids=[str(p) for p, _ in SELECTIONS])
def test_params_by_name_and_glob_in_order(
    tracker: sqltrack.Tracker, params: Any, expected: list[str]
) -> None:
    """Verify that `params=` picks params by flattened name or fnmatch glob, in the order given
    (a glob's matches sorted, each param once), all of them for None and none for []."""
    log_sweep(tracker)
    df = tracker.runs("sweep", params=params)
    assert param_columns(df) == [PREFIX + name for name in expected]
    assert len(df) == 3
    if "lr" in expected:
        assert df["params.lr"].tolist() == [0.001, 0.0003, 0.001]


def test_varying_hides_params_equal_in_every_run(tracker: sqltrack.Tracker) -> None:
    """Verify that `varying=True` hides params equal across the runs returned, keeps one
    missing in some run, and puts the hidden ones' values in ``df.attrs["equal_params"]``."""
    log_sweep(tracker)
    df = tracker.runs("sweep", varying=True)
    assert param_columns(df) == [
        "params.batch",
        "params.lr",
        "params.optim.beta1",
        "params.seed",
        "params.warmup",
    ]
    assert df.attrs["equal_params"] == {"optim.name": "adam"}
    # equal among the runs returned, not all runs: r0 and r2 share lr and optim
    pair = tracker.runs("sweep", varying=True, where="r.name IN (?, ?)", args=["r0", "r2"])
    assert param_columns(pair) == ["params.batch", "params.seed", "params.warmup"]
    assert pair.attrs["equal_params"] == {"lr": 0.001, "optim.beta1": 0.9, "optim.name": "adam"}
    assert "equal_params" not in tracker.runs("sweep").attrs


def test_varying_applies_to_the_selected_params(tracker: sqltrack.Tracker) -> None:
    """Verify that `varying` with `params` keeps the selection's order and drops its equal
    params only."""
    log_sweep(tracker)
    df = tracker.runs("sweep", params=["optim.*", "lr"], varying=True)
    assert param_columns(df) == ["params.optim.beta1", "params.lr"]
    assert df.attrs["equal_params"] == {"optim.name": "adam"}


VALUES = [
    # (id, the value in each run, equal)
    ("ints", [1, 1, 1], True),
    ("int-vs-float", [1, 1.0, 1], False),
    ("int-vs-bool", [1, True, 1], False),
    ("nan", [math.nan, math.nan, math.nan], True),
    ("lists", [[1, 2], [1, 2], [1, 2]], True),
    ("lists-differ", [[1, 2], [2, 1], [1, 2]], False),
    ("empty-dicts", [{}, {}, {}], True),
    ("none", [None, None, None], True),
    ("none-vs-missing", [None, None, "<missing>"], False),
    ("text", ["a", "a", "b"], False),
]


@pytest.mark.parametrize(("values", "equal"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES])
def test_choose_varying_compares_values_exactly(values: list[Any], equal: bool) -> None:
    """Verify that `choose` counts values equal only when every run has the same type and
    value (NaN equal to NaN, 1 unlike 1.0 and True, a missing value unlike None)."""
    records: list[dict[str, Any]] = []
    paths: dict[str, tuple[str, ...]] = {}
    for value in values:
        record: dict[str, Any] = {}
        flatten({"x": value} if value != "<missing>" else {"y": 1}, record, paths)
        records.append(record)
    chosen = choose(records, sorted(paths), ["x"], varying=True)
    assert (chosen.columns == []) is equal
    assert ("x" in chosen.equal) is equal


def test_flatten_records_each_label_path() -> None:
    """Verify that `flatten` writes nested params as dotted labels and remembers the JSON path
    of each label (a key with a dot in it is one step)."""
    record: dict[str, Any] = {}
    paths: dict[str, tuple[str, ...]] = {}
    flatten({"a": {"b": 1, "c": {}}, "d.e": [1], "f": {"g": {"h": None}}}, record, paths)
    assert record == {"params.a.b": 1, "params.a.c": {}, "params.d.e": [1], "params.f.g.h": None}
    assert paths == {
        "params.a.b": ("a", "b"),
        "params.a.c": ("a", "c"),
        "params.d.e": ("d.e",),
        "params.f.g.h": ("f", "g", "h"),
    }


def test_unknown_param_raises_with_suggestion(tracker: sqltrack.Tracker) -> None:
    """Verify that a param name (not a glob) that no returned run has raises NotFoundError
    naming the close ones, while a glob that matches nothing just shows nothing."""
    log_sweep(tracker)
    with pytest.raises(NotFoundError) as caught:
        tracker.runs("sweep", params=["lr", "bacth"])
    assert str(caught.value) == "no param 'bacth'; did you mean 'batch'?"
    assert param_columns(tracker.runs("sweep", params=["optimizer.*"])) == []


def test_named_params_of_no_runs_are_empty_columns(tracker: sqltrack.Tracker) -> None:
    """Verify that with no runs returned, named params are columns of an empty frame (there is
    nothing to check a name against)."""
    log_sweep(tracker)
    df = tracker.runs("sweep", params=["lr", "optim.*"], where="r.name = ?", args=["none"])
    assert df.empty
    assert param_columns(df) == ["params.lr"]


def test_unknown_experiment_raises_with_suggestion(tracker: sqltrack.Tracker) -> None:
    """Verify that runs() of an experiment that does not exist raises NotFoundError naming the
    close experiment names, instead of an empty frame."""
    log_sweep(tracker)
    with pytest.raises(NotFoundError) as caught:
        tracker.runs("swep")
    assert str(caught.value) == "no experiment 'swep'; did you mean 'sweep'?"
    with pytest.raises(NotFoundError, match="no experiment 'zzz'; known: 'sweep'"):
        tracker.runs("zzz")


BAD_ARGUMENTS = [
    # (id, keyword arguments, what the message names)
    ("params-int", {"params": 5}, "params 5"),
    ("params-item-int", {"params": ["lr", 3]}, "params item 3"),
    ("params-item-empty", {"params": [""]}, "params item ''"),
    ("varying-text", {"varying": "yes"}, "varying 'yes'"),
    ("args-without-where", {"args": [1]}, "without where"),
    ("args-text", {"where": "r.name = ?", "args": "r0"}, "args 'r0'"),
    ("experiment-int", {"experiment": 3}, "experiment 3"),
]


@pytest.mark.parametrize(
    ("kwargs", "named"), [b[1:] for b in BAD_ARGUMENTS], ids=[b[0] for b in BAD_ARGUMENTS]
)
def test_bad_selection_arguments_raise(
    tracker: sqltrack.Tracker, kwargs: dict[str, Any], named: str
) -> None:
    """Verify that a malformed params, varying, args or experiment raises ConfigurationError
    naming the value."""
    log_sweep(tracker)
    with pytest.raises(ConfigurationError, match=named):
        tracker.runs(**kwargs)


def test_cli_default_table_shows_a_few_varying_params(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify that `runs` without -p shows id, name, status, started, the aggregates and the
    swept params first, and says how many params it left out and how to show them."""
    log_sweep(tracker)
    result = invoke("runs", "--url", db_url, "-e", "sweep", "-m", "val/acc:max", columns=120)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    params = ["batch", "lr", "optim.beta1", "seed", "warmup"]
    assert cells == ["id", "name", "status", "started (UTC)", "val/acc:max", *params]
    assert "5 of 6 params shown (1 same in every run)" in result.stdout
    assert "same in every run: optim.name=adam" in result.stdout
    assert "-p NAME" in result.stdout and "--params" in result.stdout


def test_cli_default_table_fits_the_params_to_the_width(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify that in a narrow terminal the default table shows fewer params, never a line
    wider than the terminal, and counts the params left out."""
    log_sweep(tracker)
    result = invoke("runs", "--url", db_url, "-e", "sweep", "-m", "val/acc:max", columns=80)
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith(("┃", "│"))]
    assert table and all(text_width(line) <= 80 for line in table)
    assert "batch" in table[0] and "lr" in table[0] and "warmup" not in table[0]
    assert "2 of 6 params shown (3 more vary, 1 same in every run)" in result.stdout


CLI_SELECTIONS = [
    # (arguments, header cells after id, name, status, started)
    (["-p", "seed", "-p", "optim.*"], ["seed", "optim.beta1", "optim.name"]),
    (["--no-params"], []),
    (["--params"], ["batch", "lr", "optim.beta1", "optim.name", "seed", "warmup"]),
    (["--varying"], ["batch", "lr", "optim.beta1", "seed", "warmup"]),
    (["-p", "optim.*", "--varying"], ["optim.beta1"]),
]


@pytest.mark.parametrize(
    ("args", "expected"), CLI_SELECTIONS, ids=[" ".join(a) for a, _ in CLI_SELECTIONS]
)
def test_cli_param_selection(
    tracker: sqltrack.Tracker, db_url: str, args: list[str], expected: list[str]
) -> None:
    """Verify that -p (repeatable, in order), --params, --no-params and --varying choose the
    table's param columns."""
    log_sweep(tracker)
    result = invoke("runs", "--url", db_url, "-e", "sweep", *args, columns=200)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert cells == ["id", "name", "status", "started (UTC)", *expected]
    assert "params shown" not in result.stdout


def test_cli_selection_applies_to_csv(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that CSV and JSON keep every param by default and only those chosen with -p."""
    log_sweep(tracker)
    every = invoke("runs", "--url", db_url, "-e", "sweep", "--format", "json")
    assert len([k for k in json.loads(every.stdout)[0] if k.startswith(PREFIX)]) == 6
    chosen = invoke("runs", "--url", db_url, "-e", "sweep", "-p", "lr", "--format", "json")
    assert [k for k in json.loads(chosen.stdout)[0] if k.startswith(PREFIX)] == ["params.lr"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "swep"], "Error: no experiment 'swep'; did you mean 'sweep'?"),
        (["-e", "sweep", "-p", "lrr"], "Error: no param 'lrr'; did you mean 'lr'?"),
        (["-p", "lr", "--params"], "-p/--param and --params exclude each other"),
    ],
    ids=["unknown-experiment", "unknown-param", "p-and-params"],
)
def test_cli_selection_errors(
    tracker: sqltrack.Tracker, db_url: str, args: list[str], message: str
) -> None:
    """Verify that an unknown experiment or param, or -p with --params, is a one-line error with
    a non-zero exit status."""
    log_sweep(tracker)
    result = invoke("runs", "--url", db_url, *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output


def bulk_runs(tracker: sqltrack.Tracker, experiment: str, runs: int, params: int) -> None:
    """Insert `runs` completed runs with `params` params each into `experiment`, in one
    transaction through the schema (public API; a start_run per run took 19 s on SQLite and
    32 s on PostgreSQL for 2,000 runs, mostly `git` calls of the environment capture)."""
    b = tracker.backend
    now = time.time()
    with b.transaction():
        b.execute(b.sql("INSERT INTO experiments (name) VALUES (?)"), (experiment,))
        _, rows = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (experiment,))
        experiment_id = rows[0][0]
        for i in range(runs):
            values: dict[str, Any] = {f"layer{j:03d}.width": 64 + j for j in range(params - 4)}
            values.update(lr=[1e-3, 3e-4, 1e-4][i % 3], batch=[32, 64][i % 2], seed=i)
            values["output_dir"] = f"/scratch/runs/{i}"
            b.execute(
                b.sql(
                    "INSERT INTO runs (uuid, experiment_id, name, status, started_at, ended_at, "
                    "heartbeat_at, params) VALUES (?, ?, ?, 'completed', ?, ?, ?, ?)"
                ),
                (
                    str(uuid.uuid4()),
                    experiment_id,
                    f"run-{i:04d}",
                    b.timestamp(now - runs + i),
                    b.timestamp(now - runs + i + 0.5),
                    b.timestamp(now - runs + i + 0.5),
                    b.json_param(json.dumps(values)),
                ),
            )


BIG_ARGS = [
    # (arguments, the param columns the table shows)
    (["-e", "wide"], ["batch", "lr"]),
    (["-e", "wide", "--varying"], ["batch", "lr"]),  # output_dir, seed: hidden, named
    (["-e", "wide", "-p", "seed", "-p", "lr"], ["seed", "lr"]),
    (["--view", "wide"], ["seed"]),
]


def test_2000_runs_300_params_fit_80_columns(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `runs` over 2,000 runs with 300 params each prints, at COLUMNS=80, a table
    no wider than 80 cells with a filled row per run, never an empty grid: by default (a few
    varying params that fit), with --varying, with -p and with a saved view."""
    started = time.perf_counter()
    bulk_runs(tracker, "wide", runs=2000, params=300)
    assert time.perf_counter() - started < 20
    assert len(tracker.runs("wide", params=["*"]).columns) == 12 + 300
    tracker.save_view("wide", experiment="wide", params=["seed", "layer00*"], varying=True)
    for args, params in BIG_ARGS:
        result = invoke("runs", "--url", db_url, *args, columns=80)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert all(text_width(line) <= 80 for line in lines), args
        header = next(line for line in lines if "status" in line)
        cells = [c.strip() for c in header.strip("┃ ").split("┃")]
        assert cells == ["id", "name", "status", "started (UTC)", *params], args
        rows = [line.strip("│").split("│") for line in lines if line.startswith("│")]
        assert [row[1].strip() for row in rows] == [f"run-{i:04d}" for i in range(2000)], args
        assert all(cell.strip() for row in rows for cell in row), args
    default = invoke("runs", "--url", db_url, "-e", "wide", columns=80)
    assert "2 of 300 params shown (2 more vary, 296 same in every run)" in default.stdout
