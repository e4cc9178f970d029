"""Schema migrations: numbered SQL files per dialect, applied once each, checksummed."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatabaseError, MigrationError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["Migration", "builtin_migrations", "load_migrations", "migrate"]

_FILE_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file: `version` orders it, `(version, name)` identifies it, `checksum` pins it."""

    version: str
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        normalised = self.sql.replace("\r\n", "\n").encode("utf-8")
        return hashlib.sha256(normalised).hexdigest()


def _sql_root() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):  # wheel, then editable checkout
        if candidate.is_dir():
            return candidate
    raise MigrationError(
        f"the schema files are missing: neither {str(here / 'sql')!r} nor "
        f"{str(here.parent / 'sql')!r} exists; reinstall sqltrack-core"
    )


def load_migrations(directory: str | os.PathLike[str], dialect: str) -> list[Migration]:
    """Read the migrations in `directory` (or its `dialect` subfolder, when it has one)."""
    root = Path(directory)
    if (root / dialect).is_dir():
        root = root / dialect
    if not root.is_dir():
        raise MigrationError(f"migration directory {str(root)!r} does not exist")
    migrations = []
    for path in sorted(root.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path.name!r} in {str(root)!r} is not named "
                "NNNN_description.sql (e.g. 0001_metric_columns.sql)"
            )
        migrations.append(
            Migration(match["version"], match["name"], path, path.read_text(encoding="utf-8"))
        )
    migrations.sort(key=lambda m: (int(m.version), m.name))
    return migrations


def builtin_migrations(dialect: str) -> list[Migration]:
    """Return sqltrack-core's own migrations for `dialect`."""
    return load_migrations(_sql_root() / dialect, dialect)


def _applied(backend: Backend) -> dict[tuple[str, str], str]:
    _, rows = backend.fetchall("SELECT version, name, checksum FROM schema_migrations")
    return {(version, name): checksum for version, name, checksum in rows}


def _pending(migrations: list[Migration], applied: dict[tuple[str, str], str]) -> list[Migration]:
    pending = []
    for migration in migrations:
        checksum = applied.get((migration.version, migration.name))
        if checksum is None:
            pending.append(migration)
        elif checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.path.name!r} was applied with checksum {checksum[:12]}… "
                f"but the file now has {migration.checksum[:12]}…; applied migrations must not "
                "change: restore the file and put the change in a new, higher-numbered one"
            )
    return pending


def migrate(backend: Backend, directory: str | os.PathLike[str] | None = None) -> list[Migration]:
    """Apply the pending migrations (built-in, or those in `directory`); return those applied.

    Each file and its ``schema_migrations`` row commit in one transaction that holds the
    schema lock (a PostgreSQL advisory lock, SQLite's write lock), so processes starting at
    once apply every migration exactly once.
    """
    migrations = (
        builtin_migrations(backend.dialect.name)
        if directory is None
        else load_migrations(directory, backend.dialect.name)
    )
    try:
        pending = _pending(migrations, _applied(backend))
    except MigrationError:
        raise
    except DatabaseError:
        pending = migrations  # no bookkeeping table yet
    if not pending:
        return []
    with backend.transaction(exclusive=True):
        backend.apply_script(backend.dialect.bookkeeping_ddl())
    done = []
    for migration in pending:
        with backend.transaction(exclusive=True):
            # Re-check under the lock: another process may have applied it meanwhile.
            if (migration.version, migration.name) in _applied(backend):
                continue
            try:
                backend.apply_script(migration.sql)
            except DatabaseError as exc:
                raise MigrationError(
                    f"migration {str(migration.path)!r} failed and was rolled back: {exc}"
                ) from exc
            backend.execute(
                backend.sql(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)"
                ),
                (migration.version, migration.name, migration.checksum),
            )
        done.append(migration)
    return done
