"""The disk spool: what a run could not send, kept in a local SQLite tracking database.

While its database is away, a run's writer moves its rows and metadata writes, every flush
interval, into this process's spool for that database: a SQLite file with the tracking schema
(the same code writes it), committed with ``synchronous=FULL`` so each flush is fsync'd. When the
database answers again the writer replays its run from the spool (`sync.copy_runs`) and removes
it; a spool left at exit is sent later by ``sqltrack sync``. A live process holds an exclusive
``flock`` on ``<spool>.lock``, so ``sqltrack sync`` never sends a spool that is still growing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid as uuid_module
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import _json, migrations
from ._backends.base import mask_password
from ._backends.sqlite import SQLiteBackend
from ._store import ColumnRegistry
from .errors import ConfigurationError

try:
    import fcntl
except ImportError:  # Windows: no flock; a live process's spool is then not protected
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool", "SpoolBackend", "claim", "find_spools", "spool_dir", "spool_for"]

SPOOL_SUFFIX = ".sqlite"
#: SQLite tables a spool has beyond the tracking schema.
_SPOOL_TABLES = """
CREATE TABLE IF NOT EXISTS spool_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spool_links (
    from_run_uuid TEXT NOT NULL,
    kind          TEXT NOT NULL,
    to_run_uuid   TEXT NOT NULL,
    evidence      JSON NOT NULL DEFAULT '{}',
    PRIMARY KEY (from_run_uuid, kind, to_run_uuid)
);
CREATE TABLE IF NOT EXISTS spool_inferences (
    run_uuid        TEXT NOT NULL,
    checkpoint_uuid TEXT NOT NULL,
    resumed         BOOLEAN NOT NULL,
    PRIMARY KEY (run_uuid, checkpoint_uuid)
);
CREATE TABLE IF NOT EXISTS spool_removals (
    run_uuid   TEXT NOT NULL,
    path       TEXT NOT NULL,
    removed_at REAL NOT NULL,
    PRIMARY KEY (run_uuid, path)
);
"""


def user_cache_dir() -> Path:
    """This user's cache directory for sqltrack (XDG on Linux, the platform's elsewhere)."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "sqltrack"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "sqltrack" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "sqltrack"


def spool_dir() -> Path:
    """Where spools go: ``$SQLTRACK_SPOOL_DIR``, else ``spool/`` in the user cache directory."""
    configured = os.environ.get("SQLTRACK_SPOOL_DIR")
    return Path(configured).expanduser() if configured else user_cache_dir() / "spool"


class SpoolBackend(SQLiteBackend):
    """A spool file: a SQLite tracking database whose every commit is fsync'd."""

    synchronous = "FULL"
    is_spool = True


def is_spool(backend: object) -> bool:
    """Whether `backend` is a spool (links to runs it does not hold are kept by UUID)."""
    return getattr(backend, "is_spool", False) is True


def open_spool(path: Path) -> SpoolBackend:
    """Open (creating if needed) the spool file at `path`, schema included."""
    backend = SpoolBackend("sqlite:///" + str(path.resolve()))
    migrations.migrate(backend)
    with backend.transaction():
        backend.apply_script(_SPOOL_TABLES)
    return backend


def spool_info(backend: SQLiteBackend) -> dict[str, str]:
    """What a spool says about itself: ``target`` (its database's URL, password masked), ``pid``,
    ``host``, ``created_at``."""
    _, rows = backend.fetchall("SELECT key, value FROM spool_info")
    return {key: value for key, value in rows}


def claim(path: Path) -> IO[str] | None:
    """Take the lock of the spool at `path`; None if a live process holds it (keep the returned
    file open while using the spool; closing it releases the lock)."""
    handle = open(str(path) + ".lock", "a+")  # noqa: SIM115 - held open on purpose
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
    return handle


def remove_files(path: Path) -> None:
    """Delete a spool file with its journal and lock files."""
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


def find_spools(directory: Path | None = None) -> list[Path]:
    """The spool files in `directory` (default `spool_dir()`), oldest first."""
    folder = spool_dir() if directory is None else directory
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.name.endswith(SPOOL_SUFFIX) and p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


class Spool:
    """This process's spool for one target database, made on first use.

    Every writer of the process that targets the database shares it, one at a time (`lock`).
    """

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.lock = threading.RLock()
        # The spool is SQLite (2,000 columns at most), whatever the target's budget.
        self.registry = ColumnRegistry(budget=1500)
        self.path: Path | None = None
        self._backend: SpoolBackend | None = None
        self._lock_file: IO[str] | None = None
        self._writers: set[str] = set()  # runs of this process still spooling here
        #: files this process closed while they still held runs (runs that ended while the
        #: database was away): the next writer that reaches it sends them (or sqltrack sync)
        self.left: list[Path] = []

    def backend(self) -> SpoolBackend:
        """The open spool, created (with its directory) on first use; a file this process
        left earlier is taken up again rather than a new one begun."""
        with self.lock:
            while self._backend is None and self.left:
                path = self.left.pop()
                lock = claim(path) if path.exists() else None
                if lock is not None:  # else sqltrack sync has it, or sent it
                    self._lock_file = lock
                    self.path, self._backend = path, open_spool(path)
            if self._backend is None:
                folder = spool_dir()
                try:
                    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    raise ConfigurationError(
                        f"cannot create the spool directory {str(folder)!r}: {exc}; set "
                        "SQLTRACK_SPOOL_DIR to a writable directory"
                    ) from exc
                host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())
                name = f"{host}-{os.getpid()}-{uuid_module.uuid4().hex[:8]}{SPOOL_SUFFIX}"
                path = folder / name
                self._lock_file = claim(path)
                path.touch(mode=0o600)
                backend = open_spool(path)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                with backend.transaction():
                    for key, value in (
                        ("target", mask_password(self.target_url)),
                        ("pid", str(os.getpid())),
                        ("host", socket.gethostname()),
                        ("created_at", stamp),
                    ):
                        backend.execute(
                            "INSERT OR REPLACE INTO spool_info (key, value) VALUES (?, ?)",
                            (key, value),
                        )
                self.path, self._backend = path, backend
            return self._backend

    def attach(self, run_uuid: str) -> None:
        """A run of this process spools here (the file stays locked while one does)."""
        with self.lock:
            self._writers.add(run_uuid)

    def detach(self, run_uuid: str) -> None:
        """A run stopped spooling here (it ended; what it left is kept): once no run of this
        process spools here, the file is closed and unlocked, for ``sqltrack sync`` to send."""
        with self.lock:
            self._writers.discard(run_uuid)
            if not self._writers:
                self.close()

    def unattached_runs(self) -> list[str]:
        """Runs in the spool that no writer of this process spools to any more (they ended)."""
        with self.lock:
            if self._backend is None:
                return []
            _, rows = self._backend.fetchall("SELECT uuid FROM runs ORDER BY id")
            return [str(u) for (u,) in rows if str(u) not in self._writers]

    def forget_runs(
        self, run_uuids: list[str], keep_links: Sequence[tuple[str, str, str, Any]] = ()
    ) -> None:
        """Remove runs that reached their database (see `delete_runs`); the file goes once it
        holds no run, and is unlocked once no writer of this process spools to it."""
        with self.lock:
            self._writers.difference_update(run_uuids)
            backend = self._backend
            if backend is None:
                return
            delete_runs(backend, run_uuids, keep_links)
            _, rows = backend.fetchall("SELECT count(*) FROM runs")
            if rows[0][0] == 0:
                self.close(remove=True)
            elif not self._writers:
                self.close()

    def close(self, *, remove: bool = False) -> None:
        with self.lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
                self.registry = ColumnRegistry(budget=1500)
            if remove and self.path is not None:
                remove_files(self.path)
            elif self.path is not None:
                self.left.append(self.path)
            self.path = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def abandon(self) -> None:
        """In a forked child: drop the parent's spool without touching its file or lock."""
        if self._backend is not None:
            self._backend.abandon()
        self._backend, self._lock_file, self.path = None, None, None
        self.left = []


_spools: dict[str, Spool] = {}
_spools_lock = threading.Lock()


def spool_for(target_url: str) -> Spool:
    """This process's spool for the database at `target_url`."""
    with _spools_lock:
        spool = _spools.get(target_url)
        if spool is None:
            spool = _spools[target_url] = Spool(target_url)
        return spool


def after_fork_in_child() -> None:
    """A forked child starts with no spool of its own (the parent keeps its files)."""
    global _spools_lock
    _spools_lock = threading.Lock()
    for spool in _spools.values():
        spool.lock = threading.RLock()
        spool.abandon()
    _spools.clear()


def add_link(backend: Any, from_uuid: str, kind: str, to_uuid: str, evidence: str) -> None:
    """Keep a link in a spool by UUIDs (its other run may not be in the spool)."""
    backend.execute(
        "INSERT INTO spool_links (from_run_uuid, kind, to_run_uuid, evidence) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (from_run_uuid, kind, to_run_uuid) DO UPDATE SET evidence = excluded.evidence",
        (from_uuid, kind, to_uuid, evidence),
    )


def defer_inference(backend: Any, run_uuid: str, checkpoint_uuid: str, resumed: bool) -> None:
    """Keep, in a spool, that a run's parents are to be found from its initial weights (the
    checkpoint `checkpoint_uuid`) once it reaches a database that has the registry."""
    backend.execute(
        "INSERT OR REPLACE INTO spool_inferences (run_uuid, checkpoint_uuid, resumed) "
        "VALUES (?, ?, ?)",
        (run_uuid, checkpoint_uuid, resumed),
    )


def defer_removal(backend: Any, run_uuid: str, path: str, removed_at: float) -> None:
    """Keep, in a spool, that a checkpoint file of a run was deleted: its row may be in the
    database only (registered before the outage), where it is marked once the data arrives."""
    backend.execute(
        "INSERT OR REPLACE INTO spool_removals (run_uuid, path, removed_at) VALUES (?, ?, ?)",
        (run_uuid, path, removed_at),
    )


def delete_runs(
    backend: Any, run_uuids: list[str], keep_links: Sequence[tuple[str, str, str, Any]] = ()
) -> None:
    """Remove runs that reached their database from a spool, with their links; `keep_links`
    (links to runs the spool still holds: `SyncResult.kept_links`) stay, by UUID. Deferred
    inferences stay until `sync` has run them."""
    with backend.transaction():
        for run_uuid in run_uuids:
            backend.execute(
                "DELETE FROM spool_links WHERE from_run_uuid = ? OR to_run_uuid = ?",
                (run_uuid, run_uuid),
            )
            backend.execute("DELETE FROM runs WHERE uuid = ?", (run_uuid,))
        for from_uuid, kind, to_uuid, evidence in keep_links:
            text = (
                evidence if isinstance(evidence, str) or evidence is None else _json.dumps(evidence)
            )
            add_link(backend, from_uuid, kind, to_uuid, text or "{}")
