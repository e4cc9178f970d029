"""Client-made UUIDs, backdated starts, continue_run, delete_run, log timestamps, resumed links."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _schema import read_status, stored

import sqltrack_core as sqltrack
from sqltrack_core import (
    ConfigurationError,
    MetricTypeError,
    NotFoundError,
    RunStateError,
    RunStatus,
)

torch = pytest.importorskip("torch")
nn = torch.nn

from _weights import links_of, mlp, pretrain, state, train  # noqa: E402

EPOCH = 1_600_000_000.125  # 2020-09-13, a start well in the past

# -- helpers ---------------------------------------------------------------------------------


def stored_json(tracker: sqltrack.Tracker, column: str, run_id: int) -> Any:
    """The JSON column `column` of the runs row of `run_id`, decoded on either backend."""
    value = stored(tracker, column, run_id)
    return json.loads(value) if isinstance(value, str) else value


def count(tracker: sqltrack.Tracker, sql: str, args: list[Any] | None = None) -> int:
    """The number of rows `sql` returns."""
    df = tracker.query(sql, args or None)
    return len(df)


def epoch(value: Any) -> float:
    """Epoch seconds of a timestamp read back: a tz-aware Timestamp, datetime or ISO text (SQLite)."""
    stamp = pd.Timestamp(value)
    assert stamp.tzinfo is not None, value
    return float(stamp.timestamp())


def steps_and_values(tracker: sqltrack.Tracker, run_id: int, key: str) -> list[tuple[int, Any]]:
    df = tracker.metrics(run_id)
    return [(int(s), v) for s, v in zip(df["step"], df[key], strict=True)]


# -- start_run(uuid=..., started_at=...) -----------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True])
def test_client_uuid_is_stored(tracker: sqltrack.Tracker, as_text: bool) -> None:
    """Verify that a client-made UUID (object or text) becomes run.uuid and runs.uuid."""
    made = uuid.uuid4()
    given: uuid.UUID | str = str(made).upper() if as_text else made
    with tracker.start_run("uuids", uuid=given) as run:
        assert run.uuid == made
        assert isinstance(run.uuid, uuid.UUID)
    assert str(stored(tracker, "uuid", run.id)) == str(made)
    assert tracker.run_info(str(made))["id"] == run.id


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "1234", 42, 3.5])
def test_bad_uuid_is_refused(tracker: sqltrack.Tracker, bad: Any) -> None:
    """Verify that a value that is not a UUID is refused, named in the error, creating nothing."""
    with pytest.raises(ConfigurationError, match="uuid") as info:
        tracker.start_run("uuids", uuid=bad)
    assert repr(bad) in str(info.value)
    assert count(tracker, "SELECT id FROM runs") == 0


def test_a_taken_uuid_is_refused_and_creates_nothing(tracker: sqltrack.Tracker) -> None:
    """Verify that reusing another run's UUID raises, points at continue_run, and creates nothing."""
    made = uuid.uuid4()
    with tracker.start_run("first", uuid=made) as first:
        first.log({"loss": 1.0}, step=0)
    before_experiments = count(tracker, "SELECT id FROM experiments")
    with pytest.raises(ConfigurationError, match="continue_run") as info:
        tracker.start_run("second", uuid=str(made), params={"lr": 0.1})
    assert str(made) in str(info.value)
    assert count(tracker, "SELECT id FROM runs") == 1
    assert count(tracker, "SELECT id FROM experiments") == before_experiments == 1
    assert count(tracker, "SELECT id FROM experiments WHERE name = ?", ["second"]) == 0
    assert stored(tracker, "status", first.id) == "completed"


@pytest.mark.parametrize("started_at", [EPOCH, 1_500_000_000])
def test_started_at_backdates_the_run(tracker: sqltrack.Tracker, started_at: float) -> None:
    """Verify that started_at (epoch seconds) is stored as the run's start, to the millisecond."""
    with tracker.start_run("late", started_at=started_at) as run:
        run.log({"loss": 0.5})
    info = tracker.run_info(run.id)
    assert epoch(info["started_at"]) == pytest.approx(started_at, abs=1e-3)
    assert epoch(info["ended_at"]) == pytest.approx(time.time(), abs=60)
    assert epoch(stored(tracker, "heartbeat_at", run.id)) > started_at + 86_400


def test_default_started_at_is_now(tracker: sqltrack.Tracker) -> None:
    """Verify that without started_at the run starts now."""
    before = time.time()
    with tracker.start_run("now") as run:
        pass
    started = epoch(tracker.run_info(run.id)["started_at"])
    assert before - 1.0 <= started <= time.time() + 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "yesterday", True, [1.0]])
def test_bad_started_at_is_refused(tracker: sqltrack.Tracker, bad: Any) -> None:
    """Verify that a started_at that is not a finite number of seconds is refused, naming it."""
    with pytest.raises(ConfigurationError, match="started_at") as info:
        tracker.start_run("late", started_at=bad)
    assert repr(bad) in str(info.value)
    assert count(tracker, "SELECT id FROM runs") == 0


# -- continue_run ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_continue_a_finished_run(tracker: sqltrack.Tracker, status: str) -> None:
    """Verify that a finished run reopens as running, keeping its metadata and step count."""
    run = tracker.start_run(
        "resume",
        name="preempted",
        params={"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}},
        tags=["a", "b"],
        comment="first half",
    )
    for step in range(5):
        run.log({"loss": 1.0 / (step + 1)})
    run.finish(status)
    assert stored(tracker, "ended_at", run.id) is not None

    again = tracker.continue_run(run)
    assert again is not run
    assert (again.id, again.uuid, again.experiment, again.name) == (
        run.id,
        run.uuid,
        "resume",
        "preempted",
    )
    assert again.status is RunStatus.RUNNING
    assert stored(tracker, "status", run.id) == "running"
    assert read_status(tracker, run.id) == "running"
    assert stored(tracker, "ended_at", run.id) is None
    assert again.params == {"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}}
    assert again.tags == ["a", "b"]
    assert again.comment == "first half"

    again.log_params({"opt": {"momentum": 0.95}, "epochs": 10})
    again.add_tags("resumed")
    again.log({"loss": 0.1})
    again.log({"loss": 0.05})
    again.finish("completed")

    assert stored(tracker, "status", run.id) == "completed"
    assert stored(tracker, "ended_at", run.id) is not None
    assert stored_json(tracker, "params", run.id) == {
        "lr": 0.1,
        "opt": {"name": "sgd", "momentum": 0.95},
        "epochs": 10,
    }
    assert stored_json(tracker, "tags", run.id) == ["a", "b", "resumed"]
    assert stored(tracker, "comment", run.id) == "first half"
    assert steps_and_values(tracker, run.id, "loss") == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
        (3, 0.25),
        (4, 0.2),
        (5, 0.1),
        (6, 0.05),
    ]
    assert count(tracker, "SELECT id FROM runs") == 1


@pytest.mark.parametrize(
    "ref",
    [
        lambda run: run,
        lambda run: run.id,
        lambda run: str(run.id),
        lambda run: run.uuid,
        lambda run: str(run.uuid),
    ],
    ids=["run", "id", "id-text", "uuid", "uuid-text"],
)
def test_continue_by_any_reference(
    tracker: sqltrack.Tracker, ref: Callable[[sqltrack.Run], Any]
) -> None:
    """Verify that continue_run accepts a Run, an id (int or text) and a UUID (object or text)."""
    other = tracker.start_run("other")
    other.finish()
    with tracker.start_run("resume") as run:
        run.log({"x": 1}, step=7)
    again = tracker.continue_run(ref(run))
    assert (again.id, again.uuid) == (run.id, run.uuid)
    assert stored(tracker, "status", run.id) == "running"
    assert stored(tracker, "status", other.id) == "completed"
    again.log({"x": 2})
    again.finish()
    assert steps_and_values(tracker, run.id, "x") == [(7, 1), (8, 2)]


def test_continue_a_crashed_run_from_another_tracker(
    tracker: sqltrack.Tracker, db_url: str
) -> None:
    """Verify that a run left running with a stale heartbeat (crashed) continues from another tracker."""
    run = tracker.start_run("crash", params={"seed": 1})
    for step in range(3):
        run.log({"loss": float(step)}, step=step)
    run.finish()
    # What a killed process leaves: status running, no ended_at, a heartbeat long past.
    with tracker.backend.transaction():
        tracker.backend.execute(
            tracker.backend.sql(
                "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? WHERE id = ?"
            ),
            (tracker.backend.timestamp(time.time() - 3600), run.id),
        )
    assert read_status(tracker, run.id) == "crashed"

    with sqltrack.connect(db_url, flush_interval=0.05) as second:
        again = second.continue_run(run.uuid)
        assert read_status(second, run.id) == "running"
        assert again.params == {"seed": 1}
        again.log({"loss": 3.0})
        again.finish("completed")
    assert read_status(tracker, run.id) == "completed"
    assert steps_and_values(tracker, run.id, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]


def test_continue_a_run_without_metrics_starts_at_step_zero(tracker: sqltrack.Tracker) -> None:
    """Verify that log() without a step in a continued run that logged nothing uses step 0."""
    with tracker.start_run("empty"):
        pass
    again = tracker.continue_run(tracker.query("SELECT id FROM runs").iloc[0, 0].item())
    again.log({"acc": 0.5})
    again.finish()
    assert steps_and_values(tracker, again.id, "acc") == [(0, 0.5)]


def test_continue_then_relog_an_old_step_replaces_it(tracker: sqltrack.Tracker) -> None:
    """Verify that a continued run restarting from an earlier checkpoint overwrites the old steps."""
    with tracker.start_run("resume") as run:
        for step in range(5):
            run.log({"loss": float(step), "lr": 0.1}, step=step)
    again = tracker.continue_run(run.id)
    again.log({"loss": 30.0}, step=3)  # restarted from the step-2 checkpoint
    again.log({"loss": 40.0}, step=4)
    again.log({"loss": 50.0})  # one past the highest step
    again.finish()
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 1, 2, 3, 4, 5]
    assert list(df["loss"]) == [0.0, 1.0, 2.0, 30.0, 40.0, 50.0]
    assert list(df["lr"][:5]) == [0.1] * 5  # the values not logged again are kept


@pytest.mark.parametrize(
    "ref", [123456, "123456", uuid.UUID(int=1), str(uuid.UUID(int=2))], ids=str
)
def test_continue_an_unknown_run(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that continuing a run that does not exist raises NotFoundError and changes nothing."""
    with tracker.start_run("known") as run:
        pass
    with pytest.raises(NotFoundError):
        tracker.continue_run(ref)
    assert stored(tracker, "status", run.id) == "completed"


@pytest.mark.parametrize("bad", ["not-a-run", 1.5, None])
def test_continue_a_bad_reference(tracker: sqltrack.Tracker, bad: Any) -> None:
    """Verify that a reference that is neither a Run, an id nor a UUID is refused."""
    with pytest.raises(ConfigurationError, match="run"):
        tracker.continue_run(bad)


def test_a_finished_run_object_stays_finished_after_continue(tracker: sqltrack.Tracker) -> None:
    """Verify that the old Run object stays finished: only the returned Run logs."""
    with tracker.start_run("resume") as run:
        run.log({"x": 1})
    again = tracker.continue_run(run)
    with pytest.raises(RunStateError):
        run.log({"x": 2})
    again.finish()
    assert steps_and_values(tracker, run.id, "x") == [(0, 1)]


# -- delete_run --------------------------------------------------------------------------------


def test_delete_run_removes_metrics_links_and_checkpoints(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that delete_run removes the run, its metrics, links both ways and checkpoints only."""
    torch.manual_seed(0)
    with tracker.start_run("zoo", name="parent") as parent:
        parent.log({"loss": 1.0}, step=0)
        parent.register_checkpoint(tmp_path / "p.pt", {"w": torch.randn(8, 8)}, step=0)
    with tracker.start_run("zoo", name="victim") as victim:
        victim.link("initialized_from", parent)
        for step in range(3):
            victim.log({"loss": 0.5, "acc": 0.1 * step}, step=step)
        victim.register_checkpoint(tmp_path / "v1.pt", {"w": torch.randn(8, 8)}, step=1)
        victim.register_checkpoint(tmp_path / "v2.pt", {"w": torch.randn(8, 8)}, step=2)
    with tracker.start_run("zoo", name="child") as child:
        child.link("finetuned_from", victim)
        child.link("initialized_from", parent)
        child.log({"loss": 0.25}, step=0)

    assert count(tracker, "SELECT * FROM checkpoints WHERE run_id = ?", [victim.id]) == 2
    tracker.delete_run(victim)

    assert count(tracker, "SELECT id FROM runs WHERE id = ?", [victim.id]) == 0
    assert set(tracker.query("SELECT id FROM runs")["id"]) == {parent.id, child.id}
    assert count(tracker, "SELECT step FROM metrics WHERE run_id = ?", [victim.id]) == 0
    assert steps_and_values(tracker, parent.id, "loss") == [(0, 1.0)]
    assert steps_and_values(tracker, child.id, "loss") == [(0, 0.25)]
    assert (
        count(
            tracker,
            "SELECT * FROM run_links WHERE from_run_id = ? OR to_run_id = ?",
            [victim.id] * 2,
        )
        == 0
    )
    assert set(links_of(tracker, child.id)) == {("initialized_from", parent.id)}
    assert count(tracker, "SELECT * FROM checkpoints WHERE run_id = ?", [victim.id]) == 0
    assert count(tracker, "SELECT * FROM checkpoints WHERE run_id = ?", [parent.id]) == 1
    fingerprints = tracker.query(
        "SELECT c.run_id FROM tensor_fingerprints f JOIN checkpoints c ON c.id = f.checkpoint_id"
    )
    assert list(fingerprints["run_id"]) == [parent.id]
    assert count(tracker, "SELECT * FROM tensor_fingerprints") == 1
    with pytest.raises(NotFoundError):
        tracker.run_info(victim.id)


@pytest.mark.parametrize(
    "ref",
    [lambda run: run.id, lambda run: str(run.id), lambda run: run.uuid, lambda run: str(run.uuid)],
    ids=["id", "id-text", "uuid", "uuid-text"],
)
def test_delete_run_by_reference(
    tracker: sqltrack.Tracker, ref: Callable[[sqltrack.Run], Any]
) -> None:
    """Verify that delete_run accepts an id (int or text) and a UUID (object or text)."""
    with tracker.start_run("zoo") as keep:
        keep.log({"x": 1})
    with tracker.start_run("zoo") as gone:
        gone.log({"x": 2})
    tracker.delete_run(ref(gone))
    assert list(tracker.query("SELECT id FROM runs")["id"]) == [keep.id]
    assert steps_and_values(tracker, keep.id, "x") == [(0, 1)]
    with pytest.raises(NotFoundError):
        tracker.continue_run(gone.uuid)


def test_delete_a_running_run_is_refused(tracker: sqltrack.Tracker) -> None:
    """Verify that deleting a Run still running raises RunStateError and deletes nothing."""
    run = tracker.start_run("zoo")
    run.log({"x": 1}, step=0)
    for ref in (run, run.id, str(run.uuid)):
        with pytest.raises(RunStateError, match=f"run {run.id} is still running"):
            tracker.delete_run(ref)
    run.finish()
    assert count(tracker, "SELECT id FROM runs WHERE id = ?", [run.id]) == 1
    assert steps_and_values(tracker, run.id, "x") == [(0, 1)]
    tracker.delete_run(run)  # finished now
    assert count(tracker, "SELECT id FROM runs") == 0


@pytest.mark.parametrize("ref", [987654, str(uuid.UUID(int=3))], ids=str)
def test_delete_an_unknown_run(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that deleting a run that does not exist raises NotFoundError and deletes nothing."""
    with tracker.start_run("zoo"):
        pass
    with pytest.raises(NotFoundError):
        tracker.delete_run(ref)
    assert count(tracker, "SELECT id FROM runs") == 1


# -- log(timestamp=...) ------------------------------------------------------------------------


def test_log_timestamp_is_the_rows_logged_at(tracker: sqltrack.Tracker) -> None:
    """Verify that log(timestamp=...) stores that epoch time as the row's logged_at."""
    stamps = [EPOCH, 1_650_000_000, 1_700_000_000.5]
    before = time.time()
    with tracker.start_run("stamps") as run:
        for step, stamp in enumerate(stamps):
            run.log({"loss": float(step)}, step=step, timestamp=stamp)
        run.log({"loss": 9.0}, step=3)  # default: now
    df = tracker.metrics(run.id)
    logged = [epoch(v) for v in df["logged_at"]]
    assert list(df["step"]) == [0, 1, 2, 3]
    assert logged[:3] == [pytest.approx(s, abs=1e-3) for s in stamps]
    assert before - 1.0 <= logged[3] <= time.time() + 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "now", True, [1.0]])
def test_bad_log_timestamp_is_refused(tracker: sqltrack.Tracker, bad: Any) -> None:
    """Verify that a bad timestamp raises MetricTypeError naming it, and nothing is written for it."""
    with tracker.start_run("stamps") as run:
        run.log({"loss": 1.0}, step=0)
        with pytest.raises(MetricTypeError, match="timestamp") as info:
            run.log({"loss": 2.0, "bad": 1}, step=1, timestamp=bad)
        assert repr(bad) in str(info.value)
        run.log({"loss": 3.0}, step=2)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [0, 2]
    assert list(df["loss"]) == [1.0, 3.0]
    assert "bad" not in df.columns


def test_bad_log_timestamp_leaves_the_step_counter(tracker: sqltrack.Tracker) -> None:
    """Verify that a log() refused for its timestamp does not use up an implicit step."""
    with tracker.start_run("stamps") as run:
        run.log({"loss": 1.0})
        with pytest.raises(MetricTypeError):
            run.log({"loss": 2.0}, timestamp=math.nan)
        run.log({"loss": 3.0})
    assert list(tracker.metrics(run.id)["step"]) == [0, 1]


# -- link_from_weights(resumed=..., infer=...) -----------------------------------------------


def test_link_from_weights_resumed_links_resumed_from(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that resumed=True links the majority parent as resumed_from, not finetuned_from."""
    base, base_id, token = pretrain(tracker, tmp_path)
    model = mlp(5)
    model.load_state_dict(state(base))
    with tracker.start_run("resume") as run:
        links = run.link_from_weights(model.state_dict(), resumed=True)
    assert [(link.kind, link.run_id) for link in links] == [("resumed_from", base_id)]
    assert links[0].run_uuid == token["run_uuid"]
    stored_links = links_of(tracker, run.id)
    assert set(stored_links) == {("resumed_from", base_id)}
    evidence = stored_links[("resumed_from", base_id)]
    assert evidence["method"] == "fingerprint"
    assert evidence["fraction"] == pytest.approx(1.0)
    assert evidence["checkpoint_uuids"] == [token["checkpoint_uuid"]]
    info = tracker.run_info(base_id)
    assert [(lk["direction"], lk["kind"], lk["run_id"]) for lk in info["links"]] == [
        ("in", "resumed_from", run.id)
    ]


def test_link_from_weights_resumed_keeps_initialized_from(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that resumed=True leaves a minority parent linked as initialized_from."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    model = mlp(5)
    model.load_state_dict(
        {k: v for k, v in state(base).items() if k.startswith("0.")}, strict=False
    )
    with tracker.start_run("partial") as run:
        links = run.link_from_weights(model.state_dict(), resumed=True)
    assert [(link.kind, link.run_id) for link in links] == [("initialized_from", base_id)]
    assert set(links_of(tracker, run.id)) == {("initialized_from", base_id)}


def test_link_from_weights_without_inference_records_only(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that infer=False records the initial weights but links nothing and returns []."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    model = mlp(5)
    model.load_state_dict(state(base))
    with tracker.start_run("known-parent") as run:
        assert run.link_from_weights(model.state_dict(), infer=False) == []
    assert links_of(tracker, run.id) == {}
    assert count(tracker, "SELECT * FROM run_links WHERE to_run_id = ?", [base_id]) == 0
    ckpts = tracker.query(
        "SELECT c.kind, c.path, c.step, f.name, f.produced FROM checkpoints c "
        "JOIN tensor_fingerprints f ON f.checkpoint_id = c.id "
        "WHERE c.run_id = ? ORDER BY f.name",
        [run.id],
    )
    assert set(ckpts["kind"]) == {"initial"}
    assert ckpts["path"].isna().all() and ckpts["step"].isna().all()
    assert list(ckpts["name"]) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.weight"]
    assert not any(bool(p) for p in ckpts["produced"])


def test_continue_and_resume_from_own_checkpoint_links_nothing(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a continued run reloading its own checkpoint links to no run (not itself)."""
    model = mlp(0)
    with tracker.start_run("preempted") as run:
        assert run.link_from_weights(model.state_dict()) == []
        train(model)
        run.log({"loss": 1.0}, step=3)
        run.register_checkpoint(tmp_path / "ckpt.pt", model.state_dict(), step=3)
    resumed = mlp(7)
    resumed.load_state_dict(state(model))
    again = tracker.continue_run(run.uuid)
    assert again.link_from_weights(resumed.state_dict(), resumed=True) == []
    train(resumed, seed=5)
    again.register_checkpoint(tmp_path / "ckpt2.pt", resumed.state_dict(), step=6)
    again.finish()
    assert links_of(tracker, run.id) == {}
    kinds = tracker.query(
        "SELECT kind FROM checkpoints WHERE run_id = ? ORDER BY id",
        [run.id],
    )
    assert list(kinds["kind"]) == ["initial", "checkpoint", "initial", "checkpoint"]
    # a later run loading the continued run's last checkpoint credits it
    child = mlp(9)
    child.load_state_dict(state(resumed))
    with tracker.start_run("child") as other:
        links = other.link_from_weights(child.state_dict())
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", run.id)]
