"""Schema migrations: built-in ones once each and checksummed, user directories, the schema contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sqltrack_core as sqltrack
from sqltrack_core import MigrationError
from sqltrack_core.migrations import builtin_migrations

#: table -> columns every tracking database has (users write SQL against them)
SCHEMA_CONTRACT = {
    "experiments": {"id", "name", "comment", "tags", "created_at"},
    "runs": {
        "id",
        "uuid",
        "experiment_id",
        "name",
        "status",
        "created_at",
        "started_at",
        "ended_at",
        "heartbeat_at",
        "params",
        "env",
        "tags",
        "comment",
        "owner",
    },
    "metrics": {"run_id", "step", "logged_at", "extra"},
    "metric_columns": {"key", "column_name", "sql_type", "created_at"},
    "run_links": {"from_run_id", "kind", "to_run_id", "created_at", "evidence"},
    "schema_migrations": {"version", "name", "checksum", "applied_at"},
}

NOTES_SQL = "CREATE TABLE my_notes (id INTEGER PRIMARY KEY, body TEXT);\n"


def columns(tracker: sqltrack.Tracker, table: str) -> set[str]:
    if tracker.dialect == "sqlite":
        df = tracker.query("SELECT name FROM pragma_table_info(?)", [table])
    else:
        df = tracker.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            [table],
        )
    return set(df.iloc[:, 0])


def table_exists(tracker: sqltrack.Tracker, table: str) -> bool:
    return bool(columns(tracker, table))


def applied(tracker: sqltrack.Tracker) -> set[tuple[str, str, str]]:
    df = tracker.query("SELECT version, name, checksum FROM schema_migrations")
    return {(v, n, c) for v, n, c in df.itertuples(index=False)}


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


def test_dialects_have_the_same_migrations() -> None:
    """Verify that sql/postgresql and sql/sqlite hold the same migration file names."""
    sqlite = [m.path.name for m in builtin_migrations("sqlite")]
    postgresql = [m.path.name for m in builtin_migrations("postgresql")]
    assert sqlite
    assert sqlite == postgresql


def test_builtin_migrations_recorded(tracker: sqltrack.Tracker) -> None:
    """Verify that schema_migrations has one row per built-in migration with a sha256 checksum."""
    rows = applied(tracker)
    expected = {(m.version, m.name, m.checksum) for m in builtin_migrations(tracker.dialect)}
    assert rows == expected
    assert all(re.fullmatch(r"[0-9a-f]{64}", checksum) for _, _, checksum in rows)
    count = tracker.query("SELECT count(*) AS n FROM schema_migrations")["n"].iloc[0]
    assert count == len(expected)


def test_connecting_again_applies_nothing(db_url: str) -> None:
    """Verify that a second connect() and an explicit migrate() apply no migration again."""
    with sqltrack.connect(db_url) as first:
        before = applied(first)
        assert first.migrate() == []
    with sqltrack.connect(db_url) as second:
        assert second.migrate() == []
        assert applied(second) == before


def test_user_migrations_apply_once(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a user directory's migrations apply in order, once, and are recorded."""
    directory = write(
        tmp_path,
        {
            "0002_more_notes.sql": "ALTER TABLE my_notes ADD COLUMN author TEXT;\n",
            "0001_notes.sql": NOTES_SQL,
            "README.md": "not a migration",
        },
    )
    done = tracker.migrate(directory)
    assert [m.path.name for m in done] == ["0001_notes.sql", "0002_more_notes.sql"]
    assert columns(tracker, "my_notes") == {"id", "body", "author"}
    assert {("0001", "notes"), ("0002", "more_notes")} <= {(v, n) for v, n, _ in applied(tracker)}
    assert tracker.migrate(directory) == []


def test_edited_migration_is_refused(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that changing an applied migration file raises MigrationError naming it."""
    directory = write(tmp_path, {"0001_notes.sql": NOTES_SQL})
    assert len(tracker.migrate(directory)) == 1
    (directory / "0001_notes.sql").write_text(NOTES_SQL + "-- edited\n", encoding="utf-8")
    with pytest.raises(MigrationError, match=r"0001_notes\.sql"):
        tracker.migrate(directory)


def test_line_endings_do_not_change_checksum(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that converting an applied migration to CRLF line endings is not an edit."""
    directory = write(tmp_path, {"0001_notes.sql": NOTES_SQL + "-- a comment\n"})
    assert len(tracker.migrate(directory)) == 1
    (directory / "0001_notes.sql").write_bytes(
        (NOTES_SQL + "-- a comment\n").replace("\n", "\r\n").encode()
    )
    assert tracker.migrate(directory) == []


@pytest.mark.parametrize(
    "bad_sql",
    [
        "SELECT * FROM no_such_table;",
        "CREAT TABLE oops (id INTEGER);",
        "INSERT INTO half_done (id) VALUES ('not a number', 2);",
    ],
    ids=["runtime-error", "syntax-error", "bad-insert"],
)
def test_failing_migration_leaves_nothing(
    tracker: sqltrack.Tracker, tmp_path: Path, bad_sql: str
) -> None:
    """Verify that a failing migration raises MigrationError and is rolled back entirely."""
    directory = write(
        tmp_path,
        {
            "0001_notes.sql": NOTES_SQL,
            "0002_broken.sql": f"CREATE TABLE half_done (id INTEGER);\n{bad_sql}\n",
        },
    )
    with pytest.raises(MigrationError, match=r"0002_broken\.sql"):
        tracker.migrate(directory)
    assert not table_exists(tracker, "half_done")
    names = {n for _, n, _ in applied(tracker)}
    assert "broken" not in names
    assert "notes" in names  # the earlier file committed on its own
    assert table_exists(tracker, "my_notes")
    tracker.start_run("after-failure").finish()  # the connection is still usable
    assert len(tracker.runs()) == 1


def test_dialect_subfolder(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a user directory with postgresql/ and sqlite/ subfolders applies this dialect's."""
    directory = write(
        tmp_path,
        {
            "sqlite/0001_only.sql": "CREATE TABLE only_sqlite (id INTEGER);\n",
            "postgresql/0001_only.sql": "CREATE TABLE only_postgresql (id BIGINT);\n",
        },
    )
    done = tracker.migrate(directory)
    assert [m.path.parent.name for m in done] == [tracker.dialect]
    other = "postgresql" if tracker.dialect == "sqlite" else "sqlite"
    assert table_exists(tracker, f"only_{tracker.dialect}")
    assert not table_exists(tracker, f"only_{other}")


@pytest.mark.parametrize(
    "bad_name", ["notes.sql", "1-notes.sql", "0003_.sql", "0003_two words.sql", "v3_notes.sql"]
)
def test_badly_named_file(tracker: sqltrack.Tracker, tmp_path: Path, bad_name: str) -> None:
    """Verify that a .sql file not named NNNN_name.sql raises MigrationError and applies nothing."""
    directory = write(tmp_path, {"0001_notes.sql": NOTES_SQL, bad_name: "SELECT 1;\n"})
    with pytest.raises(MigrationError, match="NNNN_"):
        tracker.migrate(directory)
    assert not table_exists(tracker, "my_notes")


def test_missing_directory(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that migrating from a directory that does not exist raises MigrationError."""
    with pytest.raises(MigrationError, match="does not exist"):
        tracker.migrate(tmp_path / "nope")


@pytest.mark.parametrize("table", sorted(SCHEMA_CONTRACT))
def test_schema_contract(tracker: sqltrack.Tracker, table: str) -> None:
    """Verify that each documented table exists with its documented columns."""
    assert SCHEMA_CONTRACT[table] <= columns(tracker, table)
