"""Saved views: stored in the database, checked when saved, used by `runs(view=)` and
``sqltrack runs --view``, managed with ``sqltrack views``, and given to SQL tools as a SELECT."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core._view_sql import literal
from sqltrack_core.cli import cli
from sqltrack_core.cli import experiments as experiments_command
from sqltrack_core.errors import ConfigurationError, DatabaseError, NotFoundError

#: run name -> (params, val/acc per step)
RUNS = {
    "alpha": ({"lr": 0.001, "optim": {"name": "adam", "beta1": 0.9}, "seed": 1}, [0.5, 0.75]),
    "beta": ({"lr": 0.0003, "optim": {"name": "adam", "beta1": 0.95}, "seed": 2}, [0.625]),
    "gamma": ({"lr": 0.001, "optim": {"name": "sgd", "beta1": 0.9}, "seed": 3}, [0.25, 0.875]),
    "o'brien": ({"lr": 0.01, "optim": {"name": "adam", "beta1": 0.9}, "seed": 4}, [0.375]),
}
BEST = {
    "experiment": "mnist",
    "params": ["optim.*", "lr"],
    "metrics": ["val/acc:max", "val/acc:count"],
    "order_by": "-val/acc:max",
    "limit": 3,
}


def log_runs(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """Log RUNS as finished runs of 'mnist', and one run of 'other'."""
    runs = {}
    for name, (params, values) in RUNS.items():
        with tracker.start_run("mnist", name=name, params=params) as run:
            for step, value in enumerate(values):
                run.log({"val/acc": value}, step=step)
        runs[name] = run
    tracker.start_run("other", name="delta", params={"lr": 1.0}).finish()
    return runs


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_save_and_read_a_view(tracker: sqltrack.Tracker) -> None:
    """Verify that save_view stores the definition normalised, and view() and views() return
    it with owner and UTC times."""
    log_runs(tracker)
    before = datetime.now(timezone.utc)
    saved = tracker.save_view("best", **BEST)
    assert saved == tracker.view("best")
    assert {k: saved[k] for k in ("name", "experiment", "params", "varying")} == {
        "name": "best",
        "experiment": "mnist",
        "params": ["optim.*", "lr"],
        "varying": False,
    }
    assert saved["metrics"] == ["val/acc:max", "val/acc:count"]
    assert saved["order_by"] == ["-val/acc:max"]
    assert (saved["limit"], saved["where"], saved["args"]) == (3, None, [])
    assert saved["owner"]
    assert saved["created_at"] == saved["updated_at"]
    assert abs((saved["created_at"] - before).total_seconds()) < 60
    listed = tracker.views()
    assert listed.columns.tolist() == [
        "name",
        "experiment",
        "params",
        "varying",
        "metrics",
        "where",
        "args",
        "order_by",
        "limit",
        "owner",
        "created_at",
        "updated_at",
    ]
    assert listed["name"].tolist() == ["best"]
    assert listed["params"].iloc[0] == ["optim.*", "lr"]
    assert str(listed["created_at"].dt.tz) == "UTC"


def test_views_live_in_the_database(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that a view is a row of the views table, with its definition as JSON, seen by
    every other connection to the database."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    stored = tracker.query("SELECT name, definition, owner FROM views")
    assert stored["name"].tolist() == ["best"]
    definition = stored["definition"].iloc[0]
    definition = json.loads(definition) if isinstance(definition, str) else definition
    assert definition["params"] == ["optim.*", "lr"] and definition["limit"] == 3
    with sqltrack.connect(db_url) as other:
        assert other.view("best")["metrics"] == ["val/acc:max", "val/acc:count"]
        assert other.runs(view="best")["name"].tolist() == ["gamma", "alpha", "beta"]


def test_runs_of_a_view_equal_runs_with_its_arguments(tracker: sqltrack.Tracker) -> None:
    """Verify that runs(view=) gives exactly the frame of runs() with the view's arguments."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    by_view = tracker.runs(view="best")
    direct = tracker.runs(**BEST)
    assert by_view.drop(columns=["heartbeat_at"]).equals(direct.drop(columns=["heartbeat_at"]))
    assert by_view.columns[12:].tolist() == [
        "params.optim.beta1",
        "params.optim.name",
        "params.lr",
        "val/acc:max",
        "val/acc:count",
    ]
    assert by_view["val/acc:max"].tolist() == [0.875, 0.75, 0.625]


OVERRIDES = [
    # (id, arguments given with view="best", the names expected, the param columns expected)
    ("limit", {"limit": 1}, ["gamma"], ["optim.beta1", "optim.name", "lr"]),
    ("params", {"params": ["seed"]}, ["gamma", "alpha", "beta"], ["seed"]),
    ("no-params", {"params": []}, ["gamma", "alpha", "beta"], []),
    (
        "order",
        {"order_by": "name"},
        ["alpha", "beta", "gamma"],
        ["optim.beta1", "optim.name", "lr"],
    ),
    ("varying", {"varying": True}, ["gamma", "alpha", "beta"], ["optim.beta1", "optim.name", "lr"]),
    ("experiment", {"experiment": "other"}, ["delta"], ["lr"]),
    ("where", {"where": "r.name <> ?", "args": ["gamma"]}, ["alpha", "beta", "o'brien"], None),
]


@pytest.mark.parametrize(
    ("given", "names", "params"), [o[1:] for o in OVERRIDES], ids=[o[0] for o in OVERRIDES]
)
def test_arguments_given_override_the_view(
    tracker: sqltrack.Tracker, given: dict[str, Any], names: list[str], params: list[str] | None
) -> None:
    """Verify that each argument given with view= replaces the view's own, the others stay."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    df = tracker.runs(view="best", **given)
    assert df["name"].tolist() == names
    if params is not None:
        assert [c[len("params.") :] for c in df.columns if c.startswith("params.")] == params
    assert df.columns[-2:].tolist() == ["val/acc:max", "val/acc:count"]


def test_args_given_bind_the_views_where(tracker: sqltrack.Tracker) -> None:
    """Verify that args without where bind the ? of the view's where (a parametrised view)."""
    log_runs(tracker)
    tracker.save_view("one", experiment="mnist", where="r.name = ?", args=["alpha"])
    assert tracker.runs(view="one")["name"].tolist() == ["alpha"]
    assert tracker.runs(view="one", args=["o'brien"])["name"].tolist() == ["o'brien"]


def test_replace_keeps_owner_and_creation(tracker: sqltrack.Tracker) -> None:
    """Verify that saving a taken name fails without replace, and with it changes the
    definition and updated_at only."""
    log_runs(tracker)
    first = tracker.save_view("best", **BEST)
    with pytest.raises(ConfigurationError, match=r"view 'best' exists.*replace=True"):
        tracker.save_view("best", experiment="other")
    time.sleep(0.01)
    second = tracker.save_view("best", experiment="other", replace=True)
    assert second["experiment"] == "other" and second["params"] is None
    assert (second["owner"], second["created_at"]) == (first["owner"], first["created_at"])
    assert second["updated_at"] > first["updated_at"]
    assert tracker.views()["name"].tolist() == ["best"]


def test_delete_view(tracker: sqltrack.Tracker) -> None:
    """Verify that delete_view removes the view, and an unknown name raises NotFoundError."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    tracker.save_view("all")
    tracker.delete_view("best")
    assert tracker.views()["name"].tolist() == ["all"]
    with pytest.raises(NotFoundError, match="no view 'best'; known: 'all'"):
        tracker.delete_view("best")


@pytest.mark.parametrize(
    "use",
    [
        lambda t: t.view("bset"),
        lambda t: t.runs(view="bset"),
        lambda t: t.delete_view("bset"),
        lambda t: t.view_sql("bset"),
    ],
    ids=["view", "runs", "delete", "view_sql"],
)
def test_unknown_view_suggests_close_names(tracker: sqltrack.Tracker, use: Any) -> None:
    """Verify that every use of an unknown view raises NotFoundError naming the close ones."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    with pytest.raises(NotFoundError) as caught:
        use(tracker)
    assert str(caught.value) == "no view 'bset'; did you mean 'best'?"


INVALID = [
    # (id, arguments of save_view, the error, what its message says)
    ("bad-spec", {"metrics": ["val/acc"]}, ConfigurationError, "KEY:AGG"),
    ("bad-agg", {"metrics": ["val/acc:nope"]}, ConfigurationError, "nope"),
    ("unknown-key", {"metrics": ["val/acc:max", "val/acx:max"]}, NotFoundError, "val/acx"),
    ("bad-order", {"order_by": "nope"}, ConfigurationError, "order_by 'nope'"),
    ("bad-limit", {"limit": -1}, ConfigurationError, "limit -1"),
    ("unknown-experiment", {"experiment": "mnits"}, NotFoundError, "did you mean 'mnist'"),
    ("unknown-param", {"experiment": "mnist", "params": ["lrr"]}, NotFoundError, "'lr'"),
    ("bad-params", {"params": [1]}, ConfigurationError, "params item 1"),
    ("bad-varying", {"varying": 1}, ConfigurationError, "varying 1"),
    ("bad-where", {"where": "r.nope = 1"}, DatabaseError, "nope"),
    ("args-count", {"where": "r.name = ?", "args": []}, ConfigurationError, "1 '\\?' placeh"),
    ("args-type", {"where": "r.name = ?", "args": [b"x"]}, ConfigurationError, "args item 1"),
    ("args-nan", {"where": "r.id > ?", "args": [math.nan]}, ConfigurationError, "args item 1"),
    ("args-no-where", {"args": [1]}, ConfigurationError, "without where"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "says"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID]
)
def test_a_view_is_checked_when_saved(
    tracker: sqltrack.Tracker, kwargs: dict[str, Any], error: type[Exception], says: str
) -> None:
    """Verify that save_view refuses what runs() would refuse (specs, order, limit, unknown
    experiment, metric key or param, bad SQL, args), and saves nothing then."""
    log_runs(tracker)
    with pytest.raises(error, match=says):
        tracker.save_view("broken", **kwargs)
    assert tracker.views().empty


@pytest.mark.parametrize("name", ["", "  ", " best", "a\nb", "x" * 201, 3, "nul\x00"])
def test_view_names_are_checked(tracker: sqltrack.Tracker, name: Any) -> None:
    """Verify that an empty, padded, multi-line, overlong, NUL or non-str name is refused."""
    with pytest.raises(ConfigurationError, match="view name"):
        tracker.save_view(name)


LITERALS = [
    (None, "NULL"),
    (True, "TRUE"),
    (False, "FALSE"),
    (3, "3"),
    (-2.5, "-2.5"),
    (1e-05, "1e-05"),
    ("o'brien", "'o''brien'"),
    ("a?b:c%", "'a?b:c%'"),
    (UUID(int=1), "'00000000-0000-0000-0000-000000000001'"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "'2026-01-02T03:04:05+00:00'"),
]


@pytest.mark.parametrize(("value", "text"), LITERALS, ids=[repr(v) for v, _ in LITERALS])
def test_literal(value: Any, text: str) -> None:
    """Verify that values become SQL literals both databases read alike, quotes doubled."""
    assert literal(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, b"x", [1]])
def test_literal_refuses_what_sql_cannot_spell(value: Any) -> None:
    """Verify that NaN, infinities and non-scalar values have no literal."""
    with pytest.raises(ConfigurationError):
        literal(value)


def test_view_sql_gives_the_views_rows(tracker: sqltrack.Tracker) -> None:
    """Verify that the SELECT of view_sql, run as plain SQL, returns the rows, order, params
    and aggregates of runs(view=), with a quoted text value inlined."""
    log_runs(tracker)
    tracker.save_view("best", where="r.name <> ?", args=["alpha"], **BEST)
    sql = tracker.view_sql("best")
    assert sql.startswith("-- sqltrack view 'best'")
    assert "'alpha'" in sql and "?" not in sql.split("\n", 5)[-1]
    plain = tracker.query(sql)
    expected = tracker.runs(view="best")
    assert plain.columns.tolist() == expected.columns.tolist()
    assert plain["id"].tolist() == expected["id"].tolist()
    assert plain["status"].tolist() == ["completed"] * 3
    assert plain["val/acc:max"].tolist() == expected["val/acc:max"].tolist()
    assert plain["val/acc:count"].tolist() == [2, 1, 1]
    assert [str(v) for v in plain["params.optim.name"]] == ["sgd", "adam", "adam"]
    assert [float(v) for v in plain["params.lr"]] == expected["params.lr"].tolist()
    quoted = tracker.runs(experiment="mnist", where="r.name = ?", args=["o'brien"])
    tracker.save_view("quote", experiment="mnist", where="r.name = ?", args=["o'brien"])
    assert tracker.query(tracker.view_sql("quote"))["id"].tolist() == quoted["id"].tolist()


def test_view_sql_status_uses_the_clock_when_it_runs(tracker: sqltrack.Tracker) -> None:
    """Verify that the SELECT reports a running run whose heartbeat is older than stale_after
    as crashed, computed by the database when the SQL runs, not when it was made."""
    log_runs(tracker)
    run = tracker.start_run("mnist", name="live")
    try:
        tracker.save_view("live", experiment="mnist", where="r.name = ?", args=["live"])
        sql = tracker.view_sql("live")
        assert tracker.query(sql)["status"].tolist() == ["running"]
        b = tracker.backend
        old = b.timestamp(time.time() - 3600)
        b.execute(
            b.sql("UPDATE runs SET heartbeat_at = ?, started_at = ?, created_at = ? WHERE id = ?"),
            (old, old, old, run.id),
        )
        assert tracker.query(sql)["status"].tolist() == ["crashed"]
        assert tracker.runs(view="live")["status"].tolist() == ["crashed"]
    finally:
        run.finish()


def test_view_sql_names_the_params_it_leaves_out(tracker: sqltrack.Tracker) -> None:
    """Verify that a param whose key SQLite would read as a JSON path (a dot in a key) is left
    out of the SELECT and named in its comments; the others are read from params."""
    with tracker.start_run("keys", params={"a.b": 1, "c": {"d-e": 2}}) as run:
        run.log({"x": 1}, step=0)
    tracker.save_view("keys", experiment="keys", params=["*"])
    sql = tracker.view_sql("keys")
    assert "-- left out (keys SQLite would read as JSON paths): 'params.a.b'" in sql
    row = tracker.query(sql)
    assert "params.a.b" not in row.columns
    assert [str(v) for v in row["params.c.d-e"]] == ["2"]


def test_cli_views_save_list_show_delete(
    tracker: sqltrack.Tracker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify the `sqltrack views` family: save with the runs options, runs --view, list,
    show (text, JSON, --sql), and delete (asking on a terminal, or not with --yes)."""
    log_runs(tracker)
    save = "views save best -e mnist -p optim.* -p lr -m val/acc:max --order-by -val/acc:max"
    saved = invoke(*save.split(), "--limit", "2", "--url", db_url)
    assert saved.exit_code == 0, saved.output
    assert "saved view 'best'" in saved.stdout and "sqltrack runs --view best" in saved.stdout
    shown = invoke("runs", "--url", db_url, "--view", "best", "--format", "json")
    assert [r["name"] for r in json.loads(shown.stdout)] == ["gamma", "alpha"]
    table = invoke("runs", "--url", db_url, "--view", "best")
    header = next(line for line in table.stdout.splitlines() if "status" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][4:] == [
        "val/acc:max",
        "optim.beta1",
        "optim.name",
        "lr",
    ]
    listed = invoke("views", "--url", db_url, "--format", "json")
    assert [v["name"] for v in json.loads(listed.stdout)] == ["best"]
    assert "best" in invoke("views", "list", "--url", db_url).stdout
    text = invoke("views", "show", "best", "--url", db_url).stdout
    assert "params:     optim.* lr" in text and "limit:      2" in text
    record = json.loads(invoke("views", "show", "best", "--url", db_url, "--format", "json").stdout)
    assert record["order_by"] == ["-val/acc:max"]
    sql = invoke("views", "show", "best", "--url", db_url, "--sql").stdout
    assert tracker.query(sql)["name"].tolist() == ["gamma", "alpha"]

    refused = invoke("views", "delete", "best", "--url", db_url)  # no terminal, no --yes
    assert refused.exit_code == 1 and "add --yes" in refused.output
    monkeypatch.setattr(experiments_command, "stdin_is_terminal", lambda: True)
    kept = CliRunner().invoke(cli, ["views", "delete", "best", "--url", db_url], input="n\n")
    assert kept.exit_code != 0 and "Delete view 'best'" in kept.output
    assert tracker.views()["name"].tolist() == ["best"]
    gone = invoke("views", "delete", "best", "--url", db_url, input="y\n")
    assert gone.exit_code == 0 and "deleted view 'best'" in gone.stdout
    assert tracker.views().empty
    tracker.save_view("again")
    quiet = invoke("views", "delete", "again", "--url", db_url, "--yes")
    assert quiet.exit_code == 0 and "Delete view" not in quiet.output


def test_cli_group_url_reaches_subcommands(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `sqltrack views --url URL show NAME` reads that database."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    result = invoke("views", "--url", db_url, "show", "best")
    assert result.exit_code == 0, result.output
    assert "experiment: mnist" in result.stdout


def test_cli_save_with_where_args_and_replace(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `views save` takes --where with typed --arg values, refuses a taken name
    without --replace, and that `runs --view --arg` binds the view's where anew."""
    log_runs(tracker)
    base = ["views", "save", "lr", "--url", db_url, "-e", "mnist"]
    where = ["--where", "CAST(r.params ->> 'lr' AS REAL) > ?", "--arg", "0.0005"]
    assert invoke(*base, *where).exit_code == 0
    assert tracker.view("lr")["args"] == [0.0005]
    taken = invoke(*base, *where)
    assert taken.exit_code != 0 and "exists" in taken.stderr
    assert invoke(*base, *where, "--limit", "1", "--replace").exit_code == 0
    assert tracker.view("lr")["limit"] == 1
    result = invoke("runs", "--url", db_url, "--view", "lr", "--arg", "0.005", "--format", "json")
    assert [r["name"] for r in json.loads(result.stdout)] == ["o'brien"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["views", "show", "bset"], "Error: no view 'bset'; did you mean 'best'?"),
        (["views", "delete", "bset", "--yes"], "Error: no view 'bset'; did you mean 'best'?"),
        (["runs", "--view", "bset"], "Error: no view 'bset'; did you mean 'best'?"),
        (["views", "save", "x", "-e", "mnits"], "Error: no experiment 'mnits'; did you mean"),
        (["views", "save", "best"], "Error: view 'best' exists"),
    ],
    ids=["show", "delete", "runs", "save-unknown-experiment", "save-taken"],
)
def test_cli_view_errors_are_one_line(
    tracker: sqltrack.Tracker, db_url: str, args: list[str], message: str
) -> None:
    """Verify that an unknown view or a refused save is a one-line error, exit status 1."""
    log_runs(tracker)
    tracker.save_view("best", **BEST)
    result = invoke(*args, "--url", db_url)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)


@pytest.mark.parametrize(
    "command", [["views"], *(["views", c] for c in ("list", "show", "save", "delete"))]
)
def test_views_help(command: list[str]) -> None:
    """Verify that `views` and each of its subcommands answer --help."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")


def test_renaming_an_experiment_keeps_its_views(tracker: sqltrack.Tracker) -> None:
    """Verify that a view of an experiment shows the same runs after the experiment is
    renamed, and not a new experiment that takes the old name later."""
    log_runs(tracker)
    tracker.save_view("mine", experiment="mnist", metrics=["val/acc:max"])
    before = tracker.runs(view="mine")["id"].tolist()
    tracker.rename_experiment("mnist", "mnist-v1")
    assert tracker.view("mine")["experiment"] == "mnist-v1"
    tracker.start_run("mnist", name="newcomer").finish()
    assert tracker.runs(view="mine")["id"].tolist() == before


def test_saving_one_name_from_several_threads(db_url: str) -> None:
    """Verify that processes (here: threads with connections of their own) saving one view
    name at once never fail on the unique name: with replace every save succeeds, without it
    exactly one does and the others are told the view exists."""
    import threading

    errors: list[BaseException] = []
    outcomes: list[str] = []

    def save(index: int, replace: bool) -> None:
        with sqltrack.connect(db_url) as mine:
            try:
                mine.save_view(f"shared-{replace}", limit=index + 1, replace=replace)
                outcomes.append("saved")
            except ConfigurationError as exc:
                outcomes.append("exists" if "exists" in str(exc) else repr(exc))
            except BaseException as exc:
                errors.append(exc)

    sqltrack.connect(db_url).close()  # the schema, once
    for replace in (True, False):
        outcomes.clear()
        threads = [threading.Thread(target=save, args=(i, replace)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        if replace:
            assert outcomes == ["saved"] * 6
        else:
            assert sorted(outcomes) == ["exists"] * 5 + ["saved"]


def test_a_views_condition_runs_read_only(tracker: sqltrack.Tracker) -> None:
    """Verify that the SQL of a saved view's `where`, written by one user and run by every
    reader, cannot change the database on PostgreSQL (a READ ONLY transaction; a SQLite SELECT
    cannot write at all), while the same condition works as a view's filter."""
    log_runs(tracker)
    tracker.save_view("plain", where="r.name LIKE ?", args=["a%"])
    assert tracker.runs(view="plain")["name"].tolist() == ["alpha"]
    if tracker.dialect != "postgresql":
        return
    sequence = "pg_get_serial_sequence('runs', 'id')"
    tracker.save_view("writes", where=f"nextval({sequence}) > 0")  # saved: checked by its author
    before = tracker.query(
        f"SELECT last_value FROM {tracker.query(f'SELECT {sequence} AS s')['s'][0]}"
    )
    with pytest.raises(DatabaseError, match="read-only transaction"):
        tracker.runs(view="writes")
    after = tracker.query(
        f"SELECT last_value FROM {tracker.query(f'SELECT {sequence} AS s')['s'][0]}"
    )
    assert after.equals(before)
