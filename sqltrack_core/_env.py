"""What a run records about where it ran; never the process environment (it holds secrets)."""

from __future__ import annotations

import getpass
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from typing import Any

_FRAMEWORKS = ("torch", "lightning", "transformers", "keras", "numpy", "sqltrack-core")

_MASK = "***"

# A name is split into lower-case parts at separators and camelCase humps; a part that contains
# one of these words marks the name secret.
_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
)
_KEY_PREFIXES = frozenset({"api", "access", "private"})  # api_key, access-key, private.key
# Tokenizer settings (--pad-token, --eos_token, --pad_token_id) name a vocabulary token, not a
# credential.
_VOCABULARY_TOKENS = frozenset({"bos", "eos", "sos", "pad", "unk", "cls", "sep", "mask"})
_NAME_SEPARATORS = re.compile(r"[-_./@:+~\s]+")
_CAMEL_HUMP = re.compile(r"([a-z0-9])([A-Z])")
# scheme://netloc; the netloc ends where urlsplit ends it, at the first '/', '?' or '#'.
_URL_NETLOC = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#\s]*)")
_QUERY_PARAM = re.compile(r"([?&])([^=&#?\s]+)=([^&#\s]*)")
_LONG_OPTION = re.compile(r"--([^=\s]+)(?:=(.*))?", re.DOTALL)
_ASSIGNMENT = re.compile(r"([+~]{0,2}[A-Za-z_][\w.\-/@]*)=(.*)", re.DOTALL)


def _is_secret_name(name: str) -> bool:
    """Return whether an option, parameter or key name looks like it holds a secret."""
    parts = [p for p in _NAME_SEPARATORS.split(_CAMEL_HUMP.sub(r"\1_\2", name).lower()) if p]
    for i, part in enumerate(parts):
        before = parts[i - 1] if i > 0 else ""
        after = parts[i + 1] if i + 1 < len(parts) else ""
        if any(word in part for word in _SECRET_WORDS) or part == "pwd" or part.endswith("auth"):
            return True
        if part == "key" and before in _KEY_PREFIXES:
            return True
        if (
            part.endswith("token")
            and before not in _VOCABULARY_TOKENS
            and after not in ("id", "ids")
        ):
            return True
    return False


def _mask_netloc(match: re.Match[str]) -> str:
    scheme, netloc = match.group(1), match.group(2)
    if "@" not in netloc:
        return match.group(0)
    userinfo, host = netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return match.group(0)
    return f"{scheme}{userinfo.split(':', 1)[0]}:{_MASK}@{host}"


def _mask_query(match: re.Match[str]) -> str:
    if not _is_secret_name(match.group(2)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}={_MASK}"


def _mask_urls(arg: str) -> str:
    return _QUERY_PARAM.sub(_mask_query, _URL_NETLOC.sub(_mask_netloc, arg))


def mask_argv(argv: Sequence[str]) -> list[str]:
    """Return a copy of `argv` with secrets replaced by ``***``.

    Masked are: the password of any ``scheme://user:password@host`` URL anywhere in an argument,
    and secret-looking URL query parameters (``?password=...``, ``&sslpassword=...``); the value
    of a long option with a secret-looking name, either ``--password=VALUE`` or the argument after
    ``--password`` (unless that starts with ``--``); and the value of a ``KEY=VALUE`` argument
    (Hydra override or environment style, e.g. ``db.password=...``, ``+logger.api_key=...``,
    ``HF_TOKEN=...``) with a secret-looking key. A name looks secret if, split into parts at
    ``-``, ``_``, ``.`` and camelCase, a part contains password, passwd, passphrase, secret,
    credential, apikey, accesskey or privatekey, is pwd, ends in auth or token, or is key after
    api, access or private. Tokenizer settings such as ``--pad-token`` or ``--eos_token_id`` are
    not secrets; nor are short options (``-p``), ``--author`` or ``--tokenizer``.
    """
    masked: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("--"):
            masked.append(_MASK)
            mask_next = False
            continue
        mask_next = False
        arg = _mask_urls(arg)
        option = _LONG_OPTION.fullmatch(arg)
        if option is not None:
            name, value = option.group(1), option.group(2)
            if _is_secret_name(name):
                if value is None:
                    mask_next = True
                else:
                    arg = f"--{name}={_MASK}"
        else:
            assignment = _ASSIGNMENT.fullmatch(arg)
            if assignment is not None and _is_secret_name(assignment.group(1)):
                arg = f"{assignment.group(1)}={_MASK}"
        masked.append(arg)
    return masked


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
        "argv": mask_argv(sys.argv),  # never a password typed on the command line
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
