"""What a run records about where it ran; never the process environment (it holds secrets)."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any

_FRAMEWORKS = ("torch", "lightning", "transformers", "keras", "numpy", "sqltrack-core")


def _git(cwd: str) -> dict[str, Any] | None:
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return None
    status = run("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": bool(status),
        "branch": run("rev-parse", "--abbrev-ref", "HEAD"),
    }


@lru_cache(maxsize=1)  # reading package metadata costs milliseconds; versions rarely change
def _package_versions() -> tuple[tuple[str, str], ...]:
    versions: dict[str, str] = {}
    for name in _FRAMEWORKS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(versions.items())


def _cuda() -> list[dict[str, Any]] | None:
    # Only ask torch if the program imported it already: importing it here would cost
    # seconds and initialise CUDA in a process that may fork later.
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
            }
            for i in range(torch.cuda.device_count())
        ]
    except Exception:
        return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


def capture() -> dict[str, Any]:
    """Return the environment of this process as plain JSON data."""
    cwd = os.getcwd()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": cwd,
        "packages": dict(_package_versions()),
    }
    git = _git(cwd)
    if git is not None:
        env["git"] = git
    cuda = _cuda()
    if cuda is not None:
        env["cuda_devices"] = cuda
    return env
