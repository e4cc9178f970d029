"""Sending what waits offline: spools left by processes that ended while their database was away,
and copies of runs between tracking databases (what ``sqltrack sync`` does).

Example::

    from sqltrack_core import offline
    offline.sync_spools()                                   # every spool, to its own database
    offline.copy_database("sqlite:///laptop.db", "postgresql://db.lab/experiments")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import _spool, sync
from ._backends.base import mask_password, resolve_url
from .errors import ConfigurationError, SQLTrackError
from .tracker import connect

__all__ = ["SpoolSent", "copy_database", "spool_dir", "sync_spools"]

spool_dir = _spool.spool_dir


@dataclass
class SpoolSent:
    """What became of one spool file."""

    path: Path
    target: str  # the database it belongs to (password masked)
    runs: list[tuple[str, str, str | None, str]] = field(
        default_factory=list
    )  # uuid, exp, name, status
    result: sync.SyncResult = field(default_factory=sync.SyncResult)
    removed: bool = False  # everything in it was sent, and the file is gone
    skipped: str | None = None  # why it was not sent


def _spool_runs(backend: _spool.SpoolBackend) -> list[tuple[str, str, str | None, str]]:
    _, rows = backend.fetchall(
        "SELECT r.uuid, e.name, r.name, r.status FROM runs r "
        "JOIN experiments e ON e.id = r.experiment_id ORDER BY r.id"
    )
    return [(str(u), str(e), n, str(s)) for u, e, n, s in rows]


def _target_url(recorded: str, to: str | None) -> str:
    """The URL to send a spool to: `to`, else the one it recorded (a masked password is taken
    from ``$SQLTRACK_URL`` when that names the same database)."""
    if to is not None:
        return to
    if "***" not in recorded:
        return recorded
    configured = os.environ.get("SQLTRACK_URL")
    if configured and mask_password(configured) == recorded:
        return configured
    raise ConfigurationError(
        f"the spool's database {recorded!r} needs a password the spool does not keep; pass it "
        "with --to URL (or set SQLTRACK_URL, PGPASSWORD or ~/.pgpass)"
    )


def sync_spools(
    to: str | None = None,
    *,
    runs: Sequence[str] | None = None,
    dry_run: bool = False,
    directory: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SpoolSent]:
    """Send every spool (or only the runs `runs`, by UUID) to its database, or to `to`.

    A spool is sent in order and idempotently (matching runs by UUID, steps by number), then
    removed; a run sent again merges. Spools of live processes are left alone (their writer
    sends them itself when the database answers). With `dry_run` nothing is written or removed.

    Raises:
        DatabaseUnavailableError: a target database cannot be reached (nothing is lost).
    """
    wanted = None if runs is None else {str(u) for u in runs}
    reports = []
    for path in _spool.find_spools(directory):
        entry = SpoolSent(path, "?")
        reports.append(entry)
        lock = _spool.claim(path)
        if lock is None:
            entry.skipped = "still in use by a running process"
            continue
        try:
            src = _spool.open_spool(path)
            try:
                entry.target = _spool.spool_info(src).get("target", "?")
                entry.runs = [r for r in _spool_runs(src) if wanted is None or r[0] in wanted]
                if entry.runs:
                    try:
                        _send(src, entry, to, dry_run, progress)
                    except SQLTrackError as exc:  # the others may still go
                        entry.skipped = f"not sent: {exc}"
                elif wanted is not None:
                    entry.skipped = "holds none of the runs asked for"
                if not dry_run and entry.skipped is None:
                    _, left = src.fetchall("SELECT count(*) FROM runs")
                    entry.removed = left[0][0] == 0
            finally:
                src.close()
            if entry.removed:
                _spool.remove_files(path)
        finally:
            lock.close()
    return reports


def _send(
    src: _spool.SpoolBackend,
    entry: SpoolSent,
    to: str | None,
    dry_run: bool,
    progress: Callable[[int], None] | None,
) -> None:
    """Copy the spool's runs in `entry` to their database, then delete them from the spool."""
    uuids = [r[0] for r in entry.runs]
    tracker = connect(_target_url(entry.target, to), offline_ok=False)
    try:
        entry.result = sync.copy_runs(
            src, tracker.backend, tracker.registry, uuids, dry_run=dry_run, progress=progress
        )
    finally:
        tracker.close()
    if dry_run:
        return
    _spool.delete_runs(src, uuids, entry.result.kept_links)


def copy_database(
    from_url: str,
    to_url: str | None = None,
    *,
    runs: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> sync.SyncResult:
    """Copy runs (all, or those UUIDs) from one tracking database into another (default:
    ``$SQLTRACK_URL``), matching them by UUID; see `sync.copy_runs`."""
    target = resolve_url(to_url)
    if mask_password(resolve_url(from_url)) == mask_password(target):
        raise ConfigurationError(
            f"--from and --to name the same database {mask_password(target)!r}; copy between two"
        )
    source = connect(from_url, offline_ok=False)
    try:
        destination = connect(target, offline_ok=False)
        try:
            return sync.copy_runs(
                source.backend,
                destination.backend,
                destination.registry,
                runs,
                dry_run=dry_run,
                progress=progress,
            )
        finally:
            destination.close()
    finally:
        source.close()
