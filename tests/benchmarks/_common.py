"""What the benchmark scripts share: the PostgreSQL they use, and the lines that say what ran."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_PG_URL = os.environ.get(
    "SQLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def with_search_path(url: str, schema: str) -> str:
    """`url` with the session's search_path set to `schema` (a schema per benchmark run)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def pg_admin(pg_url: str, sql: str) -> None:
    """Run one administrative statement (CREATE/DROP SCHEMA or DATABASE) outside a transaction."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.encode())


def pg_unavailable(pg_url: str) -> str | None:
    """Why PostgreSQL at `pg_url` cannot be used, or None."""
    try:
        pg_admin(pg_url, "SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def pg_version(pg_url: str) -> str:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        (version,) = conn.execute("SELECT current_setting('server_version')").fetchone()  # type: ignore[misc]
    return f"PostgreSQL {version} (psycopg {psycopg.__version__})"


def git_revision() -> str:
    """``git describe --always --dirty`` of this checkout, or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
