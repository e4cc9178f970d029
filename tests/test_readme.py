"""The README's examples run verbatim: every code block marked ``<!-- tested -->`` is executed.

The marked blocks run in the README's order in one fresh folder, so a later block sees what an
earlier one logged (the embedded SQLite default, ``sqltrack.db`` there): ``python`` blocks in
one shared namespace, ``bash``/``console`` blocks line by line, where each line that starts with
``sqltrack`` runs the command (``$ `` prompts are allowed) and must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- tested -->"
_BLOCK = re.compile(r"<!-- tested -->\n```(\w+)\n(.*?)\n```", re.DOTALL)

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of each marked block, in order."""
    text = README.read_text(encoding="utf-8")
    found = [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2) for m in _BLOCK.finditer(text)
    ]
    assert len(found) == text.count(MARK), "a <!-- tested --> mark not right above a ``` fence"
    return found


def test_the_readme_marks_its_examples() -> None:
    """Verify that the README has runnable examples marked, in Python and in the shell."""
    languages = [language for language, _, _ in blocks()]
    assert languages.count("python") >= 2 and {"bash", "console"} & set(languages)


def test_every_marked_readme_block_runs_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that the marked README blocks run, in order, against a fresh SQLite database in
    an empty folder: Python without an exception, each sqltrack command with exit status 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQLTRACK_URL", raising=False)
    monkeypatch.delenv("SQLTRACK_EXPERIMENT", raising=False)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for language, code, line in blocks():
        if language == "python":
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
            _close_trackers(namespace)
        else:
            for command in _commands(code):
                _run_command(command, tmp_path, line)


def _commands(code: str) -> list[str]:
    lines = [line.removeprefix("$ ").strip() for line in code.splitlines()]
    return [line.split(" #")[0].strip() for line in lines if line.startswith("sqltrack ")]


def _run_command(command: str, cwd: Path, line: int) -> None:
    env = {**os.environ, "COLUMNS": "80", "PYTHONWARNINGS": "ignore"}
    env.pop("SQLTRACK_URL", None)
    args = [sys.executable, "-m", "sqltrack_core", *shlex.split(command)[1:]]
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"README.md:{line}: {command}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"README.md:{line}: {command} printed nothing"


def _close_trackers(namespace: dict[str, Any]) -> None:
    """Let the commands read what the Python blocks wrote: flush open runs' writers."""
    import sqltrack_core as sqltrack

    for value in list(namespace.values()):
        if isinstance(value, sqltrack.Run):
            value.flush()
