"""`connect()`: URL forms, defaults, libpq settings, and the errors a bad URL or option gives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import sqltrack_core as sqltrack
from sqltrack_core import (
    ConfigurationError,
    DatabaseUnavailableError,
    MissingDependencyError,
    UnsupportedURLError,
)


def run_count(tracker: sqltrack.Tracker) -> int:
    return int(tracker.query("SELECT count(*) AS n FROM runs")["n"].iloc[0])


def search_path(url: str) -> str:
    """The schema a conftest URL sets through ``options=-csearch_path=...``."""
    options = parse_qs(urlsplit(url).query)["options"][0]
    return unquote(options).split("search_path=", 1)[1]


def test_sqlite_relative_path_is_relative_to_cwd(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that sqlite:///relative.db creates the file in the working directory."""
    monkeypatch.chdir(tmp_path)
    with sqltrack.connect("sqlite:///relative.db") as tracker:
        assert tracker.dialect == "sqlite"
        assert run_count(tracker) == 0
    assert (tmp_path / "relative.db").is_file()


def test_sqlite_relative_path_fixed_at_connect(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that a relative SQLite path keeps naming the same file after a chdir (as Hydra does)."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    monkeypatch.chdir(first)
    with sqltrack.connect("sqlite:///relative.db", flush_interval=0.05) as tracker:
        monkeypatch.chdir(later)
        with tracker.start_run("moved") as run:
            run.log({"x": 1.5}, step=0)
        assert tracker.metrics(run.id)["x"].tolist() == [1.5]
    assert list(later.iterdir()) == []
    monkeypatch.chdir(first)
    with sqltrack.connect("sqlite:///relative.db") as again:
        assert again.metrics(run.id)["x"].tolist() == [1.5]


def test_sqlite_absolute_path(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that sqlite:////abs/path.db opens the absolute path, whatever the cwd."""
    target = tmp_path / "abs" / "path.db"
    target.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    with sqltrack.connect(url) as tracker:
        assert run_count(tracker) == 0
    assert target.is_file()
    assert list(elsewhere.iterdir()) == []


def test_default_url_is_sqltrack_db_in_cwd(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that without a URL or $SQLTRACK_URL, connect() opens sqltrack.db in the cwd."""
    monkeypatch.delenv("SQLTRACK_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with sqltrack.connect() as tracker:
        assert tracker.url == "sqlite:///sqltrack.db"
    assert (tmp_path / "sqltrack.db").is_file()


def test_default_url_from_environment(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that connect() without a URL uses $SQLTRACK_URL when it is set."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/from_env.db"
    monkeypatch.setenv("SQLTRACK_URL", url)
    with sqltrack.connect() as tracker:
        assert tracker.url == url
    assert (tmp_path / "from_env.db").is_file()
    assert not (tmp_path / "sqltrack.db").exists()


def test_explicit_url_wins_over_environment(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that an explicit URL is used even when $SQLTRACK_URL is set."""
    monkeypatch.setenv("SQLTRACK_URL", f"sqlite:///{tmp_path}/from_env.db")
    with sqltrack.connect(f"sqlite:///{tmp_path}/explicit.db"):
        pass
    assert (tmp_path / "explicit.db").is_file()
    assert not (tmp_path / "from_env.db").exists()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_schemes(pg_url: str, scheme: str) -> None:
    """Verify that both postgresql:// and postgres:// URLs open PostgreSQL."""
    url = scheme + pg_url[pg_url.index(":") :]
    with sqltrack.connect(url) as tracker:
        assert tracker.dialect == "postgresql"
        tracker.start_run("exp").finish()
        assert run_count(tracker) == 1


def test_postgres_from_libpq_environment(pg_url: str, monkeypatch: Any) -> None:
    """Verify that postgresql:// with no host takes PGHOST, PGPORT, PGUSER and PGDATABASE."""
    parts = urlsplit(pg_url)
    monkeypatch.setenv("PGHOST", parts.hostname or "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(parts.port or 5432))
    monkeypatch.setenv("PGUSER", parts.username or "postgres")
    monkeypatch.setenv("PGDATABASE", parts.path.lstrip("/") or "test")
    if parts.password:
        monkeypatch.setenv("PGPASSWORD", parts.password)
    schema = search_path(pg_url)
    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={schema}")
    with sqltrack.connect("postgresql://") as tracker:
        assert tracker.dialect == "postgresql"
        tracker.start_run("exp").finish()
        where = tracker.query("SELECT current_database() AS db, current_schema() AS s")
    assert (where["db"].iloc[0], where["s"].iloc[0]) == (parts.path.lstrip("/"), schema)


UNREACHABLE = [
    # (id, URL with a password, to a port nothing listens on)
    ("userinfo", "postgresql://bob:s3cret@127.0.0.1:1/x"),
    ("userinfo-postgres", "postgres://bob:s3cret@127.0.0.1:1/x"),
    ("query", "postgresql://bob@127.0.0.1:1/x?password=s3cret"),
    ("query-only", "postgresql:///x?host=127.0.0.1&port=1&user=bob&password=s3cret"),
    ("both", "postgresql://bob:s3cret@127.0.0.1:1/x?password=s3cret&sslmode=disable"),
]


@pytest.mark.parametrize("url", [u[1] for u in UNREACHABLE], ids=[u[0] for u in UNREACHABLE])
def test_password_never_shown_when_unreachable(url: str) -> None:
    """Verify that a password in an unreachable URL appears in neither the warning nor the error."""
    with pytest.warns(sqltrack.SQLTrackWarning, match="cannot reach") as seen:
        tracker = sqltrack.connect(url)  # a server that is away does not stop training code
    assert all("s3cret" not in str(w.message) for w in seen)
    with pytest.raises(DatabaseUnavailableError) as info:
        tracker.runs()
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value)
    assert "127.0.0.1" in str(info.value)


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_password_not_in_tracker_repr(pg_url: str, where: str) -> None:
    """Verify that a connected tracker's repr masks the URL's password, wherever it is given."""
    parts = urlsplit(pg_url)
    user = parts.username or "postgres"
    if where == "userinfo":
        netloc = f"{user}:s3cret@{parts.hostname}:{parts.port}"
        url = pg_url.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    else:
        url = f"{pg_url}&password=s3cret"  # trust auth ignores it
    with sqltrack.connect(url) as tracker:
        assert "s3cret" not in repr(tracker)
        assert "***" in repr(tracker)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bob@localhost/db",
        "http://example.com/db",
        "sqlite3:///x.db",
        "tracking.db",
        "/tmp/tracking.db",
    ],
)
def test_unknown_scheme(url: str) -> None:
    """Verify that a URL without a supported scheme raises UnsupportedURLError."""
    with pytest.raises(UnsupportedURLError):
        sqltrack.connect(url)


def test_unknown_scheme_error_masks_password() -> None:
    """Verify that the unsupported-scheme error does not repeat the URL's password."""
    with pytest.raises(UnsupportedURLError) as info:
        sqltrack.connect("mysql://bob:s3cret@localhost/db")
    assert "s3cret" not in str(info.value)


def test_sqlite_missing_directory(tmp_path: Path) -> None:
    """Verify that a SQLite file in a missing directory raises DatabaseUnavailableError when
    the caller asks for a reachable database, and otherwise warns and starts offline."""
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    with pytest.raises(DatabaseUnavailableError):
        sqltrack.connect(url, offline_ok=False)
    with pytest.warns(sqltrack.SQLTrackWarning, match="cannot reach"):
        tracker = sqltrack.connect(url)
    with pytest.raises(DatabaseUnavailableError):
        tracker.runs()
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "sqlite:///", "sqlite:relative.db", "", "   "]
)
def test_unusable_url(url: str) -> None:
    """Verify that an in-memory, path-less or empty URL raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        sqltrack.connect(url)


@pytest.mark.parametrize(
    "options",
    [
        {"flush_intervall": 1.0},
        {"flush_interval": 0},
        {"flush_interval": -1.0},
        {"flush_interval": "1"},
        {"flush_interval": True},
        {"stale_after": None},
        {"finish_timeout": 0},
        {"metadata_timeout": -5},
        {"max_pending": 0},
        {"max_pending": 1.5},
        {"column_budget": 0},
        {"column_budget": 2000},
        {"column_budget": False},
    ],
    ids=repr,
)
def test_bad_options(sqlite_url: str, options: dict[str, Any]) -> None:
    """Verify that an unknown option or a bad option value raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        sqltrack.connect(sqlite_url, **options)


def test_missing_driver(monkeypatch: Any) -> None:
    """Verify that a PostgreSQL URL without psycopg installed raises MissingDependencyError."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError, match="psycopg"):
        sqltrack.connect("postgresql://postgres@127.0.0.1:5432/test")
