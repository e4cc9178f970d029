"""Helpers the framework integration tests share: reading runs and links back, subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqltrack_core as sqltrack

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` on the database at `url`, as tuples."""
    with sqltrack.connect(url) as tracker:
        return list(tracker.query(sql).itertuples(index=False, name=None))


def links(url: str, run_id: int | None) -> dict[tuple[str, int], dict[str, Any]]:
    """(kind, to_run_id) -> evidence of the links from run `run_id`."""
    assert run_id is not None
    rows = query(
        url, f"SELECT kind, to_run_id, evidence FROM run_links WHERE from_run_id = {int(run_id)}"
    )
    return {
        (kind, int(to)): (json.loads(ev) if isinstance(ev, str) else ev) for kind, to, ev in rows
    }


def run_python(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` with tests/ on the path (for the _*.py helper modules)."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_example(name: str, url: str, cwd: Path) -> tuple[str, list[tuple[Any, ...]]]:
    """Run examples/`name` against `url`; return its output and its links as
    (from run name, kind, to run name), in kind order."""
    done = run_python(str(EXAMPLES / name), env={"SQLTRACK_URL": url}, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = query(
        url,
        "SELECT f.name, l.kind, t.name FROM run_links l "
        "JOIN runs f ON f.id = l.from_run_id JOIN runs t ON t.id = l.to_run_id ORDER BY l.kind",
    )
    assert "└─ resumed_from run" in done.stdout and "└─ finetuned_from run" in done.stdout
    return done.stdout, rows
