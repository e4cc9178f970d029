"""What the benchmark scripts share: the PostgreSQL they use, MLflow's stores, what ran."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

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


# -- MLflow -----------------------------------------------------------------------------------
# MLflow is installed only in .venv-bench (tests/benchmarks/requirements.txt): nothing here
# imports it, or SQLAlchemy, before a function that needs it runs.

MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # no usage reports sent anywhere
    "DO_NOT_TRACK": "true",
    "MLFLOW_CONFIGURE_LOGGING": "false",  # no logging setup of its own
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",  # its default: log calls are synchronous
    "GIT_PYTHON_REFRESH": "quiet",  # its run context probes git; no warning if it is missing
}


def quiet_mlflow() -> None:
    """Keep MLflow offline and quiet; call before MLflow is imported (its env is read then)."""
    os.environ.update(MLFLOW_ENV)
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def bench_schema(pg_url: str, prefix: str, *, require: bool) -> tuple[str | None, str]:
    """A fresh schema ``<prefix>_<hex>`` for this script run, and a note on the server.

    Without a server: (None, a note) after saying the PostgreSQL rows are skipped, or, with
    `require`, an error and exit status 2.
    """
    from sqltrack_core._backends.base import mask_password

    reason = pg_unavailable(pg_url)
    if reason is not None:
        message = f"PostgreSQL at {mask_password(pg_url)} is unreachable ({reason})"
        if require:
            print(f"error: {message} (--require-pg)", file=sys.stderr)
            raise SystemExit(2)
        print(f"note: {message}; the PostgreSQL rows are skipped", file=sys.stderr)
        return None, "PostgreSQL: unreachable, skipped"
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    pg_admin(pg_url, f'CREATE SCHEMA "{schema}"')
    return schema, pg_version(pg_url)


def mlflow_note(how: str) -> str:
    """MLflow's version and `how` it is run, or a note that its rows are skipped (said too)."""
    missing = mlflow_missing()
    if missing is not None:
        print(f"note: {missing}; the MLflow rows are skipped", file=sys.stderr)
        return "not installed here, skipped"
    import mlflow

    return f"{mlflow.__version__}, {how}"


def mlflow_missing() -> str | None:
    """Why the MLflow rows cannot run in this environment, or None."""
    if importlib.util.find_spec("mlflow") is None:
        return (
            f"mlflow is not installed in {sys.prefix} (only .venv-bench has it: scripts/bench "
            "sets it up)"
        )
    return None


def pg_database_url(pg_url: str, database: str) -> str:
    """The SQLAlchemy URL of `database` on the server of `pg_url`, with the psycopg 3 driver."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(pg_url)
    return url.set(drivername="postgresql+psycopg", database=database).render_as_string(
        hide_password=False
    )


class MlflowStores:
    """Fresh, empty MLflow tracking stores on one backend, copied from one migrated template.

    MLflow creates and migrates its tables (alembic) the first time a store is opened, which
    takes seconds; that is done once, in a subprocess (so that no connection to the template
    stays open), and every fresh store is a copy: a copied SQLite file, or on PostgreSQL a
    database made with ``CREATE DATABASE ... TEMPLATE`` (MLflow's tables live in a database of
    their own, next to none of sqltrack's). Call `quiet_mlflow` first: the subprocess inherits
    this process's environment.
    """

    def __init__(self, backend: str, pg_url: str, tmp: Path) -> None:
        self.backend = backend
        self._pg_url = pg_url
        self._tmp = tmp
        self._prefix = f"bench_mlflow_{uuid.uuid4().hex[:8]}"
        if backend == "sqlite":
            self._template = str(tmp / f"{self._prefix}_template.db")
            template_uri = f"sqlite:///{self._template}"
        else:
            self._template = f"{self._prefix}_template"
            pg_admin(pg_url, f'CREATE DATABASE "{self._template}"')
            template_uri = pg_database_url(pg_url, self._template)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                template_uri,
            ],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        if done.returncode != 0:
            self.close()
            raise RuntimeError(
                f"MLflow could not create its store at {template_uri}:\n{done.stderr}"
            )

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        """A new store's tracking URI, dropped on exit; MLflow's global tracking URI is untouched."""
        name = f"{self._prefix}_{uuid.uuid4().hex[:8]}"
        if self.backend == "sqlite":
            path = self._tmp / f"{name}.db"
            shutil.copyfile(self._template, path)
            uri = f"sqlite:///{path}"
        else:
            pg_admin(self._pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
            uri = pg_database_url(self._pg_url, name)
        try:
            yield uri
        finally:
            dispose_mlflow(uri)
            if self.backend == "sqlite":
                path.unlink(missing_ok=True)
            else:
                pg_admin(self._pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self.backend == "sqlite":
            Path(self._template).unlink(missing_ok=True)
        else:
            pg_admin(self._pg_url, f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')


@contextlib.contextmanager
def mlflow_store(backend: str, pg_url: str, tmp: Path) -> Iterator[str]:
    """One empty, migrated MLflow store for a whole script run (its tracking URI), then dropped."""
    stores = MlflowStores(backend, pg_url, tmp)
    try:
        with stores.fresh() as uri:
            yield uri
    finally:
        stores.close()


def open_mlflow_stores(
    stack: contextlib.ExitStack[Any], pg_url: str, pg_ok: bool, tmp: Path, experiments: list[str]
) -> dict[str, str]:
    """MLflow's stores for a script run: "sqlite" and (with `pg_ok`) "postgresql" -> URI.

    Each already holds `experiments`, their artifacts under `tmp` (MLflow would put them in
    ./mlruns), as the sqltrack databases hold their tables after a warm-up. `stack` drops them.
    """
    from mlflow import MlflowClient

    uris = {}
    for backend in ("sqlite", "postgresql") if pg_ok else ("sqlite",):
        uri = stack.enter_context(mlflow_store(backend, pg_url, tmp))
        client = MlflowClient(uri)
        for name in experiments:
            new_experiment(client, name, tmp)
        uris[backend] = uri
    return uris


def dispose_mlflow(uri: str) -> None:
    """Close the connection pool MLflow keeps for `uri` (it caches one store per URI)."""
    from mlflow import MlflowClient

    with contextlib.suppress(Exception):
        MlflowClient(uri)._tracking_client.store.engine.dispose()


def new_experiment(client: MlflowClient, name: str, tmp: Path) -> str:
    """Create MLflow experiment `name` with its artifacts under `tmp` (never ./mlruns)."""
    artifacts = tmp / "mlflow-artifacts" / name
    return str(client.create_experiment(name, artifact_location=artifacts.as_uri()))
