"""One contract for every adapter: the same scenarios through Lightning, Hugging Face, Keras and
the plain-loop example, on SQLite and PostgreSQL (in the spirit of Lightning's
``tests_pytorch/loggers/test_all.py``).

Each scenario drives a tiny training through a driver (tests/_contract_drivers.py) and holds
the database against what the framework itself reported. A new adapter gets the whole suite
by adding one driver.
"""

from __future__ import annotations

import ast
import copy
import math
import pickle
import re
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from _contract_drivers import DRIVERS, Driver, load_driver
from _integration import EXAMPLES, TESTS, links, query, run_python
from _schema import RECORDED_TYPES, metric_columns

import sqltrack_core as sqltrack
from sqltrack_core import offline
from sqltrack_core.errors import SQLTrackWarning

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    # the frameworks' own advice (workers, logging intervals, deprecations) is not under test
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

SCRIPT = str(TESTS / "_contract_script.py")


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> Driver:
    """The driver of the adapter `each_adapter` names (its framework imported now)."""
    return load_driver(request.param)


def each_adapter(**known_bugs: str) -> pytest.MarkDecorator:
    """Run a scenario through every adapter. An adapter with a known bug (``name="why"``) is a
    strict xfail: the test still runs, and fails once the bug is fixed so the mark goes too."""
    assert set(known_bugs) <= set(DRIVERS), known_bugs
    return pytest.mark.parametrize(
        "driver",
        [
            pytest.param(
                name,
                id=name,
                marks=[pytest.mark.xfail(reason=known_bugs[name], strict=True)]
                if name in known_bugs
                else [],
            )
            for name in DRIVERS
        ],
        indirect=True,
    )


# -- reading back ---------------------------------------------------------------------------------


def stored(url: str, run_id: int | None) -> dict[int, dict[str, Any]]:
    """The run's metrics as step -> {key: value}, without the keys that have no value there."""
    assert run_id is not None
    with sqltrack.connect(url) as tracker:
        frame = tracker.metrics(run_id)
    keys = [c for c in frame.columns if c not in ("run_id", "step", "logged_at")]
    return {
        int(step): {key: frame[key].iloc[i] for key in keys if not _missing(frame[key].iloc[i])}
        for i, step in enumerate(frame["step"])
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def last_reported(logged: Iterable[tuple[int, str, Any]]) -> dict[int, dict[str, Any]]:
    """What the framework reported, as step -> {key: value}; a key reported again at a step
    holds its later value, as in the database."""
    rows: dict[int, dict[str, Any]] = {}
    for step, key, value in logged:
        rows.setdefault(step, {})[key] = value
    return rows


def assert_holds(rows: dict[int, dict[str, Any]], logged: Iterable[tuple[int, str, Any]]) -> None:
    """Every value the framework reported is stored, exactly, at the step it reported."""
    for step, values in last_reported(logged).items():
        assert step in rows, f"step {step} is missing; stored steps: {sorted(rows)}"
        for key, value in values.items():
            if _missing(value):  # NaN reads back as missing through pandas: not compared
                continue
            got = rows[step].get(key)
            assert got == value, (step, key, got, value)


def statuses(url: str) -> list[tuple[str, str]]:
    """(uuid, status) of every run in the database."""
    return [(str(u), str(s)) for u, s in query(url, "SELECT uuid, status FROM runs ORDER BY id")]


def family(value: Any) -> str:
    """The RECORDED_TYPES family a reported value belongs to."""
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "text")):
        if isinstance(value, kind):
            return name
    return "json"


def unreachable(db_url: str, tmp_path: Path) -> str:
    """A database of the same kind as `db_url` that cannot be reached: a SQLite file in a folder
    that does not exist, a PostgreSQL server on a port nothing listens on."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/missing/dir/sqltrack.db"
    return "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"


# -- the scenarios --------------------------------------------------------------------------------


@each_adapter()
def test_metrics_become_typed_columns_and_params_are_stored(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify each reported key is a column of its value's type, and the params are stored
    with their nesting."""
    result = driver.train(db_url, tmp_path)
    with sqltrack.connect(db_url) as tracker:
        info = tracker.run_info(result.uuid)
        columns = metric_columns(tracker)
        dialect = 0 if tracker.dialect == "sqlite" else 1
    assert (info["id"], info["status"]) == (result.run_id, "completed")
    key, value = driver.nested_param
    assert info[key] == pytest.approx(value)
    seen: dict[str, set[str]] = {}
    for _, name, reported in result.logged:
        if reported is not None:
            seen.setdefault(name, set()).add(family(reported))
    assert any("float" in kinds for kinds in seen.values())
    for name, kinds in seen.items():
        kind = "float" if "float" in kinds else kinds.pop()  # an int column widens to float
        assert columns[name][1] == RECORDED_TYPES[kind][dialect], (name, kinds, columns[name])
    assert columns[driver.int_key][1] == RECORDED_TYPES["int"][dialect]


@each_adapter()
def test_stored_steps_are_the_steps_the_framework_reported(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify the run's steps are exactly the framework's, each value at its step."""
    result = driver.train(db_url, tmp_path)
    rows = stored(db_url, result.run_id)
    assert rows and sorted(rows) == sorted(last_reported(result.logged))
    assert_holds(rows, result.logged)


@each_adapter()
def test_resuming_from_a_checkpoint_makes_a_run_linked_resumed_from(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify resuming from another run's checkpoint starts a new run linked resumed_from it,
    whose steps go on from the checkpoint's."""
    first = driver.train(db_url, tmp_path / "first")
    second = driver.train(db_url, tmp_path / "second", resume_from=first.checkpoints[0])
    assert second.uuid != first.uuid
    assert list(links(db_url, second.run_id)) == [("resumed_from", first.run_id)]
    assert links(db_url, first.run_id) == {}
    rows = stored(db_url, second.run_id)
    assert sorted(rows) == sorted(last_reported(second.logged))
    assert min(rows) > min(step for step, _, _ in first.logged)
    assert statuses(db_url) == [(first.uuid, "completed"), (second.uuid, "completed")]


@each_adapter()
def test_a_weights_only_file_links_finetuned_from_by_fingerprints(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify training from weights saved without the adapter links finetuned_from the run
    that trained them, found by their fingerprints."""
    first = driver.train(db_url, tmp_path / "first")
    weights = driver.save_weights(first, tmp_path / "weights")
    second = driver.train(db_url, tmp_path / "second", weights_from=weights)
    found = links(db_url, second.run_id)
    assert list(found) == [("finetuned_from", first.run_id)]
    assert found[("finetuned_from", first.run_id)]["method"] == "fingerprint"


@each_adapter()
def test_a_run_without_its_database_completes_and_syncs_later(
    driver: Driver, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify training completes with a warning while the database cannot be reached, the spool
    holds the run, and `sync_spools` brings it, with every value, into the real database."""
    monkeypatch.setenv("SQLTRACK_FINISH_TIMEOUT", "1")  # then the run waits in the spool
    with pytest.warns(SQLTrackWarning) as caught:
        result = driver.train(unreachable(db_url, tmp_path), tmp_path)
    assert any("cannot reach" in str(w.message) for w in caught)
    assert result.run_id is None and result.logged
    sent = offline.sync_spools(to=db_url)
    assert [entry.removed for entry in sent] == [True]
    assert [run[0] for run in sent[0].runs] == [result.uuid]
    assert statuses(db_url) == [(result.uuid, "completed")]
    with sqltrack.connect(db_url) as tracker:
        run_id = int(tracker.run_info(result.uuid)["id"])
    rows = stored(db_url, run_id)
    assert sorted(rows) == sorted(last_reported(result.logged))
    assert_holds(rows, result.logged)


@each_adapter()
def test_a_pickled_or_copied_adapter_logs_into_the_same_run(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify a pickled and a deep-copied adapter object log into their original's run."""
    result = driver.train(db_url, tmp_path)
    top = max(step for step, _, _ in result.logged)
    clones = [pickle.loads(pickle.dumps(result.tracking)), copy.deepcopy(result.tracking)]
    probes = []
    for number, clone in enumerate(clones, start=1):
        keys = driver.log_through(clone, {"probe": float(number)}, top + number)
        probes.append((top + number, keys["probe"], float(number)))
    assert statuses(db_url) == [(result.uuid, "completed")]
    rows = stored(db_url, result.run_id)
    assert_holds(rows, [*result.logged, *probes])


@each_adapter()
@pytest.mark.slow
def test_an_exception_in_training_ends_the_run_failed(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify a training that raised ends its run failed, even when the script catches the
    exception and exits normally, and keeps what it logged."""
    done = run_python(SCRIPT, driver.name, "raise", db_url, str(tmp_path))
    assert done.returncode == 0 and "caught boom" in done.stdout, done.stderr[-3000:]
    [(_, status)] = statuses(db_url)
    assert status == "failed"
    assert query(db_url, "SELECT count(*) FROM metrics")[0][0] >= 1


@each_adapter()
@pytest.mark.slow
def test_sigterm_ends_the_run_cancelled(driver: Driver, db_url: str, tmp_path: Path) -> None:
    """Verify a real SIGTERM mid-training ends the run cancelled, with what it logged kept
    (Lightning stops gracefully and exits 0; elsewhere the signal ends the process)."""
    done = run_python(SCRIPT, driver.name, "sigterm", db_url, str(tmp_path))
    assert done.returncode in (0, -signal.SIGTERM), done.stderr[-3000:]
    [(_, status)] = statuses(db_url)
    assert status == "cancelled"
    assert query(db_url, "SELECT count(*) FROM metrics")[0][0] >= 1


@each_adapter()
def test_training_twice_with_one_adapter_object_is_one_run_whose_steps_go_on(
    driver: Driver, db_url: str, tmp_path: Path
) -> None:
    """Verify a second fit()/train() with the same adapter object goes on in its run: one run,
    the second training's values after the first's, none of the first's overwritten."""
    first = driver.train(db_url, tmp_path)
    second = driver.train(db_url, tmp_path, again=first)
    assert second.uuid == first.uuid
    assert statuses(db_url) == [(first.uuid, "completed")]
    rows = stored(db_url, first.run_id)
    assert_holds(rows, first.logged)
    end = max(step for step, _, _ in first.logged)
    reported = sorted(last_reported(second.logged))
    assert reported, "the second training reported nothing"
    went_on = sorted(step for step in rows if step > end)
    assert len(went_on) == len(reported), (sorted(rows), reported)
    at = dict(zip(reported, went_on, strict=True))  # Keras counts epochs from 0 again
    assert_holds(rows, [(at[step], key, value) for step, key, value in second.logged])


# -- the plain-loop example: the public seam suffices ---------------------------------------------


def test_the_plain_loop_adapter_uses_only_the_public_seam() -> None:
    """Verify examples/plain_loop_adapter.py imports no private module or name of sqltrack_core,
    nothing of sqltrack_integrations, and reaches no private attribute but its own."""
    tree = ast.parse((EXAMPLES / "plain_loop_adapter.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and re.fullmatch(r"_[^_].*", node.attr):
            owner = node.value
            assert isinstance(owner, ast.Name) and owner.id == "self", ast.unparse(node)
            continue
        else:
            continue
        for name in names:
            assert not name.startswith("sqltrack_integrations"), name
            if name.startswith("sqltrack_core"):
                assert not any(part.startswith("_") for part in name.split(".")), name


def test_the_plain_loop_example_links_its_three_runs(db_url: str, tmp_path: Path) -> None:
    """Verify examples/plain_loop_adapter.py runs and links fine-tune and resume by kind."""
    done = run_python(
        str(EXAMPLES / "plain_loop_adapter.py"), env={"SQLTRACK_URL": db_url}, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed_from" in done.stdout and "finetuned_from" in done.stdout
    assert query(
        db_url,
        "SELECT f.name, l.kind, t.name, f.status FROM run_links l "
        "JOIN runs f ON f.id = l.from_run_id JOIN runs t ON t.id = l.to_run_id ORDER BY l.kind",
    ) == [
        ("tuned", "finetuned_from", "base", "completed"),
        ("tuned (resumed)", "resumed_from", "tuned", "completed"),
    ]
