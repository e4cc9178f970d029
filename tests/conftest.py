"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``$SQLTRACK_TEST_POSTGRES_URL`` (default: this machine's server at
127.0.0.1:5432, database ``test``). Each test gets a schema of its own through the URL's
``search_path``, dropped afterwards. Without a server the PostgreSQL half skips, unless
``SQLTRACK_TEST_REQUIRE_POSTGRES=1`` (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import sqltrack_core as sqltrack

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

PG_URL = os.environ.get("SQLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("SQLTRACK_TEST_REQUIRE_POSTGRES") == "1"

_pg_error: list[str | None] = []


def _pg_unavailable() -> str | None:
    """Return why PostgreSQL cannot be used, or None; asked once per session."""
    if not _pg_error:
        try:
            import psycopg

            with psycopg.connect(PG_URL, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            _pg_error.append(None)
        except Exception as exc:
            _pg_error.append(f"PostgreSQL at {PG_URL} is unavailable: {exc}")
    return _pg_error[0]


def with_search_path(url: str, schema: str) -> str:
    """Return `url` with the session's search_path set to `schema`."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    reason = _pg_unavailable()
    if reason is not None:
        if REQUIRE_PG:
            pytest.fail(reason + " (SQLTRACK_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(PG_URL, schema)
    finally:
        _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(autouse=True)
def spool_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test spools into a folder of its own, never the user's cache directory."""
    folder = tmp_path_factory.mktemp("spool")
    monkeypatch.setenv("SQLTRACK_SPOOL_DIR", str(folder))
    return folder


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite URL for a new file in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/sqltrack.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A URL for an empty database, once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def tracker(db_url: str) -> Iterator[sqltrack.Tracker]:
    """A connected tracker on each backend, flushing often so tests run fast."""
    t = sqltrack.connect(db_url, flush_interval=0.05)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def no_sqltrack_warnings() -> Iterator[None]:
    """Fail a test that makes sqltrack warn, unless it expects so with pytest.warns (for tests
    that must ignore the frameworks' own warnings)."""
    from sqltrack_core.errors import SQLTrackWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    ours = [str(w.message) for w in seen if issubclass(w.category, SQLTrackWarning)]
    assert not ours
