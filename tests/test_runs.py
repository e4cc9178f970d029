"""Runs: lifecycle and statuses, SIGTERM, stale heartbeats, env capture, tags, params, links."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _schema import read_status, stored

import sqltrack_core
import sqltrack_core as sqltrack
from sqltrack_core import (
    ConfigurationError,
    NotFoundError,
    RunStateError,
    RunStatus,
)

WAIT_S = 30.0  # upper bound for a subprocess or the writer; never a timing assertion


def run_row(tracker: sqltrack.Tracker, run_id: int) -> dict[str, Any]:
    df = tracker.runs(where="r.id = ?", args=[run_id])
    assert len(df) == 1
    return {str(k): v for k, v in df.iloc[0].to_dict().items()}


def subprocess_env(url: str) -> dict[str, str]:
    return {**os.environ, "SQLTRACK_URL": url}


# -- lifecycle --------------------------------------------------------------------------------


def test_context_manager_completes(tracker: sqltrack.Tracker) -> None:
    """Verify that a run used as a context manager ends completed, with its metrics written."""
    with tracker.start_run("life", name="cm") as run:
        assert run.status is RunStatus.RUNNING
        assert stored(tracker, "status", run.id) == "running"
        run.log({"loss": 0.5}, step=0)
    assert run.status is RunStatus.COMPLETED
    assert stored(tracker, "status", run.id) == "completed"
    assert stored(tracker, "ended_at", run.id) is not None
    assert list(tracker.metrics(run.id)["loss"]) == [0.5]


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_plain_call_and_finish(tracker: sqltrack.Tracker, status: str) -> None:
    """Verify that a run started by a plain call ends with the status given to finish()."""
    run = tracker.start_run("life")
    run.log({"loss": 0.25})
    assert stored(tracker, "status", run.id) == "running"
    run.finish(status)
    assert run.status is RunStatus(status)
    assert stored(tracker, "status", run.id) == status
    assert list(tracker.metrics(run.id)["loss"]) == [0.25]


EXCEPTIONS = [
    # (id, exception raised inside the with block, expected status)
    ("runtime-error", RuntimeError("boom"), "failed"),
    ("value-error", ValueError("bad"), "failed"),
    ("keyboard-interrupt", KeyboardInterrupt(), "cancelled"),
    ("system-exit-0", SystemExit(0), "completed"),
    ("system-exit-none", SystemExit(), "completed"),
    ("system-exit-2", SystemExit(2), "failed"),
    ("system-exit-message", SystemExit("bad config"), "failed"),
]


@pytest.mark.parametrize(
    ("exc", "status"), [e[1:] for e in EXCEPTIONS], ids=[e[0] for e in EXCEPTIONS]
)
def test_exception_in_context_sets_status_and_propagates(
    tracker: sqltrack.Tracker, exc: BaseException, status: str
) -> None:
    """Verify that an exception leaving the with block sets the status and is re-raised."""
    with pytest.raises(type(exc)), tracker.start_run("life") as run:
        run.log({"loss": 1.0}, step=0)
        raise exc
    assert run.status is RunStatus(status)
    assert stored(tracker, "status", run.id) == status
    assert list(tracker.metrics(run.id)["step"]) == [0]


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_finish_is_idempotent(tracker: sqltrack.Tracker, status: str) -> None:
    """Verify that finishing twice with the same status is a no-op."""
    run = tracker.start_run("life")
    run.finish(status)
    run.finish(status)
    run.finish(RunStatus(status))
    assert stored(tracker, "status", run.id) == status


CONFLICTS = [
    ("completed", "failed"),
    ("completed", "cancelled"),
    ("failed", "completed"),
    ("cancelled", "completed"),
]


@pytest.mark.parametrize(("first", "second"), CONFLICTS, ids=[f"{a}-{b}" for a, b in CONFLICTS])
def test_conflicting_finish_raises(tracker: sqltrack.Tracker, first: str, second: str) -> None:
    """Verify that finishing with a different status than the first is a RunStateError."""
    run = tracker.start_run("life")
    run.finish(first)
    with pytest.raises(RunStateError, match=first):
        run.finish(second)
    assert run.status is RunStatus(first)
    assert stored(tracker, "status", run.id) == first


BAD_FINISH = [
    # (id, status, error)
    ("running", "running", RunStateError),
    ("running-enum", RunStatus.RUNNING, RunStateError),
    ("crashed", "crashed", RunStateError),
    ("bogus", "bogus", ConfigurationError),
    ("empty", "", ConfigurationError),
]


@pytest.mark.parametrize(
    ("status", "error"), [b[1:] for b in BAD_FINISH], ids=[b[0] for b in BAD_FINISH]
)
def test_finish_with_non_final_status_raises(
    tracker: sqltrack.Tracker, status: Any, error: type[Exception]
) -> None:
    """Verify that finish() with a non-final or unknown status raises and leaves the run running."""
    with tracker.start_run("life") as run:
        with pytest.raises(error):
            run.finish(status)
        assert run.status is RunStatus.RUNNING
        assert stored(tracker, "status", run.id) == "running"
    assert stored(tracker, "status", run.id) == "completed"


def test_log_after_finish_raises(tracker: sqltrack.Tracker) -> None:
    """Verify that log() on a finished run raises RunStateError and writes nothing."""
    with tracker.start_run("life") as run:
        run.log({"x": 1}, step=0)
    with pytest.raises(RunStateError, match="completed"):
        run.log({"x": 2}, step=1)
    assert list(tracker.metrics(run.id)["step"]) == [0]


# -- interpreter exit -------------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import sqltrack_core as sqltrack

    run = sqltrack.start_run("atexit")  # never finished: the atexit hook does it
    run.log({{"x": 1.5}}, step=0)
    print(run.id, flush=True)
    {ending}
    """
)

EXITS = [
    # (id, last line of the script, expected return code, expected status)
    ("falls-off-the-end", "pass", 0, "completed"),
    ("sys-exit-0", "sys.exit(0)", 0, "completed"),
    ("uncaught-exception", "raise RuntimeError('boom')", 1, "failed"),
    ("uncaught-keyboard-interrupt", "raise KeyboardInterrupt", -signal.SIGINT, "cancelled"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ending", "returncode", "status"), [e[1:] for e in EXITS], ids=[e[0] for e in EXITS]
)
def test_unfinished_run_is_finished_at_exit(
    db_url: str, ending: str, returncode: int, status: str
) -> None:
    """Verify that a run left unfinished is finished at interpreter exit, by how Python ended."""
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT.format(ending=ending)],
        env=subprocess_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == returncode, proc.stderr
    run_id = int(proc.stdout.split()[0])
    with sqltrack.connect(db_url) as tracker:
        assert stored(tracker, "status", run_id) == status
        assert stored(tracker, "ended_at", run_id) is not None
        assert tracker.metrics(run_id)["x"].tolist() == [1.5]


# -- SIGTERM ----------------------------------------------------------------------------------

SIGTERM_SCRIPT = textwrap.dedent(
    """
    import signal
    import sys
    import time
    import sqltrack_core as sqltrack

    {setup}
    tracker = sqltrack.connect(flush_interval=3600)
    run = tracker.start_run("sigterm")
    {after_start}
    for step in range(50):
        run.log({{"x": step}}, step=step)
    print(run.id, "ready", flush=True)
    time.sleep(120)
    print("not interrupted", flush=True)
    """
)

OWN_HANDLER = textwrap.dedent(
    """
    def handler(signum, frame):
        print("own handler", signum, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, handler)
    """
)

COMPOSING_HANDLER = (
    "ours = signal.getsignal(signal.SIGTERM); "
    "signal.signal(signal.SIGTERM, lambda n, f: (ours(n, f), print('graceful', flush=True), "
    "sys.exit(0)))"
)

SIGTERMS = [
    # (id, setup code, code run after start_run, expected return code, printed after 'ready')
    ("default-handler", "", "", -signal.SIGTERM, ""),
    ("own-handler", OWN_HANDLER, "", 0, f"own handler {int(signal.SIGTERM)}"),
    # a handler installed later that calls ours (as Lightning's does) decides; ours must not kill
    ("composed-later", "", COMPOSING_HANDLER, 0, "graceful"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "after_start", "returncode", "printed"),
    [s[1:] for s in SIGTERMS],
    ids=[s[0] for s in SIGTERMS],
)
def test_sigterm_cancels_run(
    db_url: str, setup: str, after_start: str, returncode: int, printed: str
) -> None:
    """Verify that SIGTERM cancels the run, writes its rows, then acts as the prior handler would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT.format(setup=setup, after_start=after_start)],
        env=subprocess_env(db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[1:] == ["ready"], proc.stderr.read() if proc.stderr else ""
        run_id = int(first[0])
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == returncode, err
    assert rest.strip() == printed
    with sqltrack.connect(db_url) as tracker:
        assert stored(tracker, "status", run_id) == "cancelled"
        assert stored(tracker, "ended_at", run_id) is not None
        assert list(tracker.metrics(run_id)["x"]) == list(range(50))


def test_sigterm_handler_restored_after_finish(tracker: sqltrack.Tracker) -> None:
    """Verify that the SIGTERM handler in place before a run is back once the run finishes."""

    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never called
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        with tracker.start_run("signals"):
            assert signal.getsignal(signal.SIGTERM) is not mine  # the run's handler is installed
        assert signal.getsignal(signal.SIGTERM) is mine
        run = tracker.start_run("signals")
        run.finish("failed")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_handler_kept_while_any_run_is_open(tracker: sqltrack.Tracker) -> None:
    """Verify that the previous SIGTERM handler comes back only when the last open run ends."""

    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never called
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        first = tracker.start_run("signals")
        second = tracker.start_run("signals")
        installed = signal.getsignal(signal.SIGTERM)
        assert installed is not mine
        first.finish()
        assert signal.getsignal(signal.SIGTERM) is installed
        second.finish("cancelled")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


# -- stale heartbeat --------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import os
    import sqltrack_core as sqltrack

    tracker = sqltrack.connect(flush_interval=3600)
    run = tracker.start_run("crash")
    for step in range(10):
        run.log({"x": step}, step=step)
    assert run.flush(timeout=60)
    print(run.id, flush=True)
    os._exit(0)
    """
)


@pytest.mark.slow
def test_stale_heartbeat_reads_as_crashed(db_url: str) -> None:
    """Verify that a run whose process died unfinished reads as crashed but is stored as running."""
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT],
        env=subprocess_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = int(proc.stdout.split()[0])
    with sqltrack.connect(db_url, stale_after=0.5) as tracker:
        deadline = time.monotonic() + WAIT_S
        while (status := read_status(tracker, run_id)) != "crashed":
            assert time.monotonic() < deadline, f"still {status!r}"
            time.sleep(0.1)
        assert stored(tracker, "status", run_id) == "running"
        assert stored(tracker, "ended_at", run_id) is None
        assert list(tracker.metrics(run_id)["x"]) == list(range(10))
    with sqltrack.connect(db_url) as patient:  # default stale_after: not stale yet
        assert read_status(patient, run_id) == "running"


@pytest.mark.slow
def test_alive_run_keeps_beating_before_its_first_log(db_url: str) -> None:
    """Verify that a live run that has not logged yet never reads as crashed (it beats from start)."""
    with sqltrack.connect(db_url, stale_after=2.0) as tracker:
        run = tracker.start_run("slow-setup")
        first = stored(tracker, "heartbeat_at", run.id)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # longer than stale_after, logging nothing
            assert read_status(tracker, run.id) == "running"
            time.sleep(0.25)
        assert stored(tracker, "heartbeat_at", run.id) != first
        run.finish()


def test_finished_run_never_reads_as_crashed(db_url: str) -> None:
    """Verify that a finished run keeps its status however old its heartbeat is."""
    with sqltrack.connect(db_url, stale_after=0.01) as tracker:
        with tracker.start_run("stale") as run:
            run.log({"x": 1})
        time.sleep(0.05)
        assert read_status(tracker, run.id) == "completed"


# -- env --------------------------------------------------------------------------------------


def env_of(tracker: sqltrack.Tracker, run_id: int) -> dict[str, Any]:
    env: dict[str, Any] = tracker.run_info(run_id)["env"]
    return env


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_env_captured(tracker: sqltrack.Tracker) -> None:
    """Verify that runs.env records python, platform, host, user, argv, cwd and packages."""
    with tracker.start_run("env") as run:
        pass
    env = env_of(tracker, run.id)
    for key in ("python", "platform", "hostname", "user", "argv", "cwd", "packages"):
        assert key in env, key
    assert env["python"] == ".".join(str(v) for v in sys.version_info[:3])
    assert env["argv"] == sys.argv
    assert env["cwd"] == os.getcwd()
    assert env["packages"]["sqltrack-core"] == sqltrack.__version__


def test_env_records_git_commit_and_dirty(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that runs.env records the git commit and whether tracked files are modified."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n", encoding="utf-8")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    commit = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    with sqltrack.connect(db_url, flush_interval=0.05) as tracker:
        with tracker.start_run("git") as clean:
            pass
        (repo / "train.py").write_text("print('v2')\n", encoding="utf-8")
        with tracker.start_run("git") as dirty:
            pass
        clean_git = env_of(tracker, clean.id)["git"]
        dirty_git = env_of(tracker, dirty.id)["git"]
    assert clean_git["commit"] == commit
    assert clean_git["dirty"] is False
    assert dirty_git["commit"] == commit
    assert dirty_git["dirty"] is True


def test_env_without_git_repo(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that runs.env has no git entry when the working directory is not a repository."""
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with sqltrack.connect(db_url) as tracker:
        with tracker.start_run("nogit") as run:
            pass
        assert "git" not in env_of(tracker, run.id)


def test_env_holds_no_environment_values(
    tracker: sqltrack.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that no environment variable's value ends up in runs.env."""
    secret = "s3cr3t-" + uuid.uuid4().hex
    monkeypatch.setenv("SQLTRACK_TEST_API_TOKEN", secret)
    with tracker.start_run("env") as run:
        pass
    raw = stored(tracker, "env", run.id)
    text = raw if isinstance(raw, str) else json.dumps(raw)
    assert "cwd" in text  # the column was read at all
    assert secret not in text
    assert "SQLTRACK_TEST_API_TOKEN" not in text


# -- tags, comment, params --------------------------------------------------------------------

TAG_CASES = [
    # (id, initial tags, set_tags argument or None, add_tags arguments, expected tags)
    ("add-dedup", ["a"], None, ("b", "a", "b"), ["a", "b"]),
    ("set-dedup-order", ["x"], ["c", "a", "c", "b"], (), ["c", "a", "b"]),
    ("set-then-add", ["x"], ["b"], ("a", "x"), ["b", "a", "x"]),
    ("set-empty", ["x", "y"], [], (), []),
    ("start-dedup", ["a", "a", "b"], None, (), ["a", "b"]),
]


@pytest.mark.parametrize(
    ("initial", "replace", "add", "expected"),
    [t[1:] for t in TAG_CASES],
    ids=[t[0] for t in TAG_CASES],
)
def test_tags(
    tracker: sqltrack.Tracker,
    initial: list[str],
    replace: list[str] | None,
    add: tuple[str, ...],
    expected: list[str],
) -> None:
    """Verify that set_tags replaces, add_tags appends, both dedupe and keep order, and persist."""
    with tracker.start_run("tags", tags=initial) as run:
        if replace is not None:
            run.set_tags(replace)
        if add:
            run.add_tags(*add)
        assert run.tags == expected
    assert run_row(tracker, run.id)["tags"] == expected


BAD_TAGS = [
    # (id, call)
    ("set-str", lambda run: run.set_tags("abc")),
    ("set-int", lambda run: run.set_tags([1])),
    ("set-empty-str", lambda run: run.set_tags(["ok", ""])),
    ("add-int", lambda run: run.add_tags("ok", 2)),
    ("add-empty", lambda run: run.add_tags("")),
    ("add-none", lambda run: run.add_tags(None)),
]


@pytest.mark.parametrize("call", [b[1] for b in BAD_TAGS], ids=[b[0] for b in BAD_TAGS])
def test_bad_tags_raise(tracker: sqltrack.Tracker, call: Any) -> None:
    """Verify that invalid tags raise ConfigurationError and leave the stored tags unchanged."""
    with tracker.start_run("tags", tags=["keep"]) as run:
        with pytest.raises(ConfigurationError):
            call(run)
        assert run.tags == ["keep"]
    assert run_row(tracker, run.id)["tags"] == ["keep"]


def test_start_run_rejects_str_tags(tracker: sqltrack.Tracker) -> None:
    """Verify that start_run(tags='a') raises instead of splitting the string into letters."""
    with pytest.raises(ConfigurationError):
        tracker.start_run("tags", tags="abc")


@pytest.mark.parametrize("text", ["first note", "", None], ids=["text", "empty", "none"])
def test_comment_setter_persists(tracker: sqltrack.Tracker, text: str | None) -> None:
    """Verify that assigning run.comment writes it to runs.comment."""
    with tracker.start_run("comment", comment="initial") as run:
        assert run.comment == "initial"
        run.comment = text
        assert run.comment == text
        assert stored(tracker, "comment", run.id) == text


def test_comment_setter_rejects_non_str(tracker: sqltrack.Tracker) -> None:
    """Verify that a non-str comment raises ConfigurationError and keeps the old one."""
    with tracker.start_run("comment", comment="initial") as run, pytest.raises(ConfigurationError):
        run.comment = 42  # type: ignore[assignment]
    assert stored(tracker, "comment", run.id) == "initial"


def test_log_params_deep_merges(tracker: sqltrack.Tracker) -> None:
    """Verify that log_params merges nested dicts key by key and persists the result."""
    start = {"lr": 0.1, "model": {"layers": 2, "act": "relu", "head": {"dim": 8}}}
    with tracker.start_run("params", params=start) as run:
        run.log_params({"model": {"layers": 4, "head": {"dropout": 0.5}}, "batch": 32})
        run.log_params({"lr": 0.01})
    expected = {
        "lr": 0.01,
        "model": {"layers": 4, "act": "relu", "head": {"dim": 8, "dropout": 0.5}},
        "batch": 32,
    }
    assert run.params == expected
    row = run_row(tracker, run.id)
    assert row["params.lr"] == 0.01
    assert row["params.batch"] == 32
    assert row["params.model.layers"] == 4
    assert row["params.model.act"] == "relu"
    assert row["params.model.head.dim"] == 8
    assert row["params.model.head.dropout"] == 0.5
    assert sorted(k for k in row if k.startswith("params.")) == sorted(
        [
            "params.lr",
            "params.batch",
            "params.model.layers",
            "params.model.act",
            "params.model.head.dim",
            "params.model.head.dropout",
        ]
    )


def test_log_params_replaces_non_dict_with_dict(tracker: sqltrack.Tracker) -> None:
    """Verify that a dict logged over a scalar param replaces the scalar."""
    with tracker.start_run("params", params={"opt": "sgd"}) as run:
        run.log_params({"opt": {"name": "adam", "beta": 0.9}})
    row = run_row(tracker, run.id)
    assert row["params.opt.name"] == "adam"
    assert "params.opt" not in row


def test_log_params_rejects_non_mapping(tracker: sqltrack.Tracker) -> None:
    """Verify that log_params with a non-dict raises ConfigurationError."""
    with tracker.start_run("params") as run, pytest.raises(ConfigurationError):
        run.log_params([("lr", 0.1)])  # type: ignore[arg-type]


# -- links ------------------------------------------------------------------------------------

REFS = [
    # (id, how the other run is given)
    ("run", lambda other: other),
    ("int-id", lambda other: other.id),
    ("uuid-str", lambda other: str(other.uuid)),
    ("uuid-obj", lambda other: other.uuid),
    ("uuid-upper", lambda other: str(other.uuid).upper()),
]


@pytest.mark.parametrize("ref", [r[1] for r in REFS], ids=[r[0] for r in REFS])
def test_link_by_reference(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that link() accepts a Run, an int id or a UUID and stores kind and evidence."""
    with tracker.start_run("links", name="base") as base:
        pass
    evidence = {"checkpoint": "base.pt", "epoch": 3, "nested": {"ok": True}}
    with tracker.start_run("links", name="tuned") as tuned:
        tuned.link("finetuned_from", ref(base), evidence=evidence)
    links = tracker.run_info(tuned)["links"]
    assert links == [
        {"direction": "out", "kind": "finetuned_from", "run_id": base.id, "evidence": evidence}
    ]
    incoming = tracker.run_info(base)["links"]
    assert incoming == [
        {"direction": "in", "kind": "finetuned_from", "run_id": tuned.id, "evidence": evidence}
    ]


def test_link_again_updates_evidence(tracker: sqltrack.Tracker) -> None:
    """Verify that linking the same pair and kind twice keeps one link with the newer evidence."""
    with tracker.start_run("links") as base:
        pass
    with tracker.start_run("links") as tuned:
        tuned.link("uses", base, evidence={"v": 1})
        tuned.link("uses", base.id, evidence={"v": 2})
        tuned.link("compared_with", base)
    links = sorted(tracker.run_info(tuned)["links"], key=lambda link: link["kind"])
    assert [(link["kind"], link["evidence"]) for link in links] == [
        ("compared_with", {}),
        ("uses", {"v": 2}),
    ]


UNKNOWN = [
    ("int-id", lambda: 987654321),
    ("uuid-str", lambda: str(uuid.uuid4())),
    ("uuid-obj", lambda: uuid.uuid4()),
]


@pytest.mark.parametrize("ref", [u[1] for u in UNKNOWN], ids=[u[0] for u in UNKNOWN])
def test_link_to_unknown_run_raises(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that linking to a run id or uuid that does not exist raises NotFoundError."""
    with tracker.start_run("links") as run, pytest.raises(NotFoundError):
        run.link("uses", ref())
    assert tracker.run_info(run)["links"] == []


@pytest.mark.parametrize("ref", [r[1] for r in REFS], ids=[r[0] for r in REFS])
def test_link_to_itself_raises(tracker: sqltrack.Tracker, ref: Any) -> None:
    """Verify that linking a run to itself raises ConfigurationError."""
    with tracker.start_run("links") as run, pytest.raises(ConfigurationError, match="itself"):
        run.link("uses", ref(run))


BAD_LINKS = [
    # (id, kind, other)
    ("empty-kind", "", None),
    ("blank-kind", "  ", None),
    ("int-kind", 3, None),
    ("not-a-uuid", "uses", "not-a-uuid"),
    ("float-ref", "uses", 1.5),
]


@pytest.mark.parametrize(
    ("kind", "other"), [b[1:] for b in BAD_LINKS], ids=[b[0] for b in BAD_LINKS]
)
def test_bad_link_raises(tracker: sqltrack.Tracker, kind: Any, other: Any) -> None:
    """Verify that an invalid link kind or run reference raises ConfigurationError."""
    with tracker.start_run("links") as base:
        pass
    with tracker.start_run("links") as run, pytest.raises(ConfigurationError):
        run.link(kind, base if other is None else other)


# -- identity, experiments, module-level start_run --------------------------------------------


def test_two_runs_share_one_experiment_row(tracker: sqltrack.Tracker) -> None:
    """Verify that runs in the same experiment reuse a single experiments row."""
    with tracker.start_run("shared"):
        pass
    with tracker.start_run("shared"):
        pass
    with tracker.start_run("other"):
        pass
    names = tracker.query("SELECT name FROM experiments ORDER BY name")["name"].tolist()
    assert names == ["other", "shared"]
    df = tracker.runs("shared")
    assert len(df) == 2
    assert set(df["experiment"]) == {"shared"}
    assert len(set(stored(tracker, "experiment_id", i) for i in df["id"])) == 1


def test_run_identity(tracker: sqltrack.Tracker) -> None:
    """Verify that run.id is an int and run.uuid a UUID equal to the runs.uuid column."""
    with tracker.start_run("ident") as first:
        pass
    with tracker.start_run("ident") as second:
        pass
    for run in (first, second):
        assert type(run.id) is int
        assert isinstance(run.uuid, uuid.UUID)
        assert uuid.UUID(str(stored(tracker, "uuid", run.id))) == run.uuid
    assert first.id != second.id
    assert first.uuid != second.uuid


def test_module_start_run_uses_env_url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that sqltrack_core.start_run writes to the database named by $SQLTRACK_URL."""
    monkeypatch.setenv("SQLTRACK_URL", db_url)
    monkeypatch.setattr(sqltrack_core.tracker, "_default", {})
    try:
        with sqltrack_core.start_run("module", name="default") as run:
            run.log({"x": 1.5}, step=0)
    finally:
        for default in sqltrack_core.tracker._default.values():
            default.close()
    with sqltrack.connect(db_url) as tracker:
        df = tracker.runs("module")
        assert df["id"].tolist() == [run.id]
        assert df.loc[0, "name"] == "default"
        assert df.loc[0, "status"] == "completed"
        assert tracker.metrics(run.id)["x"].tolist() == [1.5]
