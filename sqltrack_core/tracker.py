"""`connect()` and the `Tracker`: one database, its runs, and the readers over them."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _env, _json, analysis, migrations, runs
from ._backends import Backend, open_backend
from ._backends.base import check_scheme, mask_password, pin_url, resolve_url
from ._store import DEFAULT_COLUMN_BUDGET, ColumnRegistry
from ._warn import warn
from .errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    NotFoundError,
    RunStateError,
    SQLTrackError,
)
from .runs import Run, _check_description, active_runs

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Options", "Tracker", "connect"]


@dataclass
class Options:
    """Tuning knobs of a `Tracker`; the defaults suit training loops."""

    #: seconds between background flushes
    flush_interval: float = 1.0
    #: queued rows that trigger an early flush
    max_pending: int = 5000
    #: metric columns allowed before new keys go to ``metrics.extra`` (PostgreSQL caps tables at 1,600)
    column_budget: int = DEFAULT_COLUMN_BUDGET
    #: a running run whose heartbeat is older than this many seconds reads as ``crashed``
    stale_after: float = 300.0
    #: seconds `Run.finish` (and the end of the program, for all its runs together) waits for
    #: the last rows to be written while the database is away; then they stay in the spool.
    #: Default: ``$SQLTRACK_FINISH_TIMEOUT``, else 60 (for integrations, which take no options)
    finish_timeout: float = field(
        default_factory=lambda: _env_seconds("SQLTRACK_FINISH_TIMEOUT", 60.0)
    )
    #: seconds a metadata write (tags, params, links) waits before it is left queued
    metadata_timeout: float = 10.0
    #: seconds a write may go unanswered before the connection counts as lost (a black hole)
    write_timeout: float = 10.0

    def check(self) -> None:
        for name in (
            "flush_interval",
            "stale_after",
            "finish_timeout",
            "metadata_timeout",
            "write_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(
                    f"option {name}={value!r} must be a positive number of seconds"
                )
        for name in ("max_pending", "column_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"option {name}={value!r} must be a positive int")
        if self.column_budget > 1500:
            raise ConfigurationError(
                f"option column_budget={self.column_budget!r} is too large; PostgreSQL allows "
                "1,600 columns per table, so use at most 1500"
            )


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(
            f"${name}={text!r} is not a number of seconds; expected e.g. {name}=30"
        ) from None


_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()
_POOL_SIZE = 4  # idle writer connections kept per tracker


class Tracker:
    """A tracking database: start runs in it and read them back.

    Example::

        tracker = sqltrack.connect("sqlite:///sqltrack.db")
        with tracker.start_run("mnist", params={"lr": 1e-3}) as run:
            run.log({"train/loss": 0.25}, step=1)
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        migrate: bool = True,
        offline_ok: bool = True,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(Options.__dataclass_fields__)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)!r}; expected some of {sorted(Options.__dataclass_fields__)!r}"
            )
        self.options = Options(**options)
        self.options.check()
        self.url = resolve_url(url)
        self._open_url = pin_url(self.url)  # what every connection opens, whatever the cwd later
        self._lock = threading.RLock()
        self._pool: list[Backend] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._migrate = migrate
        self._schema_ready = False
        self.registry = ColumnRegistry(self.options.column_budget)
        self._backend: Backend
        try:
            self._backend = open_backend(self._open_url)
            self._ensure_schema(self._backend)
        except DatabaseUnavailableError as exc:
            if not offline_ok:
                raise
            # The database is away: runs start anyway and go to the spool until it answers.
            warn(
                f"sqltrack: cannot reach {mask_password(self.url)} ({exc}); runs start anyway, "
                "their data goes to the local spool and is sent when the database answers"
            )
            self._backend = _LazyBackend(self._open_url, failure=exc)
        _trackers.add(self)

    def __repr__(self) -> str:
        return f"<Tracker {mask_password(self.url)}>"

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return check_scheme(self._open_url)

    @property
    def backend(self) -> Backend:
        """The reader connection (for this package's modules; users call `query`).

        A connection lost earlier is opened again on use; a tracker made while its database
        was away migrates it here first.
        """
        if not self._schema_ready:
            self._ensure_schema(self._backend)
        return self._backend

    def _ensure_schema(self, backend: Backend) -> None:
        """Migrate (once per tracker) through `backend`, unless told not to."""
        if self._schema_ready:
            return
        with self._lock:
            if not self._schema_ready:
                if self._migrate:
                    migrations.migrate(backend)
                self._schema_ready = True

    def _open_backend(self) -> Backend:
        """A writer connection: a pooled one if a finished run returned it, else a new one."""
        with self._pool_lock:
            backend = self._pool.pop() if self._pool else None
        if backend is None:
            backend = open_backend(self._open_url)
        try:
            self._ensure_schema(backend)
        except BaseException:
            with contextlib.suppress(SQLTrackError):
                backend.close()
            raise
        if isinstance(self._backend, _LazyBackend):
            self._backend.reachable()
        return backend

    def _release_backend(self, backend: Backend) -> None:
        """Take back a finished run's writer connection (sequential runs skip reconnecting)."""
        with self._pool_lock:
            if len(self._pool) < _POOL_SIZE and not self._closed:
                self._pool.append(backend)
                return
        with contextlib.suppress(SQLTrackError):
            backend.close()

    def migrate(
        self, directory: str | os.PathLike[str] | None = None
    ) -> list[migrations.Migration]:
        """Apply pending built-in migrations, then those in `directory` if given."""
        with self._lock:
            done = migrations.migrate(self.backend)
            if directory is not None:
                done += migrations.migrate(self.backend, directory)
            self.registry.refresh(self.backend)
            return done

    # -- runs ---------------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        comment: str | None = None,
        uuid: uuid_module.UUID | str | None = None,
        started_at: float | None = None,
    ) -> Run:
        """Create a running run in `experiment` (created if new); use it as a context manager.

        `uuid` is the run's client-made UUID (default: a new one), for callers that must name
        the run before it exists, such as a logger whose checkpoint paths carry it.
        `started_at` (epoch seconds, default now) backdates the start, for runs recorded late.
        """
        checked_tags = _check_description(experiment, name, comment, tags)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigurationError(
                f"params {params!r:.80} is a {type(params).__name__}; expected a dict"
            )
        plain_params = _json.jsonable(dict(params or {}))
        run_uuid = uuid_module.uuid4() if uuid is None else _check_uuid(uuid)
        if started_at is not None and (
            not isinstance(started_at, (int, float))
            or isinstance(started_at, bool)
            or not math.isfinite(started_at)
        ):
            raise ConfigurationError(
                f"started_at {started_at!r} must be a finite number of epoch seconds"
            )
        env = _env.capture()
        started = time.time() if started_at is None else float(started_at)
        fields: dict[str, Any] = {
            "uuid": run_uuid,
            "experiment": experiment,
            "name": name,
            "params": plain_params,
            "env": env,
            "tags": checked_tags,
            "comment": comment,
            "started_at": started,
        }
        run_id: int | None
        try:
            with self._lock:
                run_id = self._insert_run(self.backend, new=True, **fields)
        except DatabaseUnavailableError as exc:
            # The run starts anyway: its writer creates it when the database answers, and
            # keeps everything in the spool meanwhile.
            warn(
                f"sqltrack: cannot reach {mask_password(self.url)} ({exc}); run {run_uuid} "
                "starts offline, its data goes to the local spool until the database answers"
            )
            run_id = None
        return Run(
            self,
            id=run_id,
            uuid=run_uuid,
            experiment=experiment,
            name=name,
            params=plain_params,
            tags=checked_tags,
            comment=comment,
            env=env,
            started_at=started,
        )

    def _insert_run(
        self,
        b: Backend,
        *,
        uuid: uuid_module.UUID,
        experiment: str,
        name: str | None,
        params: Mapping[str, Any],
        env: Mapping[str, Any],
        tags: list[str],
        comment: str | None,
        started_at: float,
        status: str = "running",
        ended_at: float | None = None,
        new: bool = False,
        reopen: bool = False,
    ) -> int:
        """Create a run in `b` (this database, or a spool); return its id there.

        A run with this UUID already there is kept as it is (and its id returned; with `reopen`
        it is made running again), unless `new` asks for a new run: then that is an error.
        """
        now = b.timestamp(time.time())
        owner, owner_params = b.dialect.owner_sql(env.get("user"))
        with b.transaction():
            _, taken = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(uuid),))
            if taken:
                if reopen and status == "running":
                    b.execute(
                        b.sql(
                            "UPDATE runs SET status = 'running', ended_at = NULL, "
                            "heartbeat_at = ? WHERE id = ?"
                        ),
                        (now, taken[0][0]),
                    )
                if not new:
                    return int(taken[0][0])
                raise ConfigurationError(
                    f"run {taken[0][0]} already has uuid {uuid}; continue it with "
                    "tracker.continue_run() or leave uuid out for a new run"
                )
            b.execute(
                b.sql("INSERT INTO experiments (name) VALUES (?) ON CONFLICT (name) DO NOTHING"),
                (experiment,),
            )
            _, rows = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (experiment,))
            experiment_id = rows[0][0]
            b.execute(
                b.sql(
                    "INSERT INTO runs (uuid, experiment_id, name, status, started_at, ended_at, "
                    "heartbeat_at, params, env, tags, comment, owner) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, " + owner + ")"
                ),
                (
                    str(uuid),
                    experiment_id,
                    name,
                    status,
                    b.timestamp(started_at),
                    None if ended_at is None else b.timestamp(ended_at),
                    now,
                    b.json_param(_json.dumps(params)),
                    b.json_param(_json.dumps(env)),
                    b.json_param(_json.dumps(tags)),
                    comment,
                    *owner_params,
                ),
            )
            _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(uuid),))
        return int(rows[0][0])

    def continue_run(
        self, run: Run | int | str | uuid_module.UUID, *, experiment: str | None = None
    ) -> Run:
        """Reopen an existing run (by `Run`, id or UUID) so that logging goes on in it.

        For a job that was preempted and restarts from its checkpoint: the run goes back to
        ``running``, its ``ended_at`` is cleared, and `log()` without a step continues after its
        last logged step. Its params, tags and comment are kept and merge with new ones. It does
        not check that no other process still writes to the run.

        While the database is away, a run given by UUID with its `experiment` goes on offline:
        what it logs is spooled and the run is reopened when the database answers (log with
        explicit steps then: the last one stored is not known yet).

        Raises:
            NotFoundError: no such run.
            DatabaseUnavailableError: the database is away and the run cannot go on offline.
        """
        try:
            return self._continue_run(run)
        except DatabaseUnavailableError:
            by_id = isinstance(run, int) or (isinstance(run, str) and run.strip().isdigit())
            if experiment is None or by_id:
                raise  # an integer id needs the database to name the run
            _check_description(experiment, None, None, None)
            return Run(
                self,
                id=None,
                uuid=uuid_module.UUID(self._run_uuid(run)),  # a Run or a UUID: no database
                experiment=experiment,
                name=None,
                params={},
                tags=[],
                comment=None,
                env=_env.capture(),
                reopen=True,
            )

    def _continue_run(self, run: Run | int | str | uuid_module.UUID) -> Run:
        run_id = self._run_id(run)
        b = self.backend
        now = b.timestamp(time.time())
        with self._lock, b.transaction():
            _, rows = b.fetchall(
                b.sql(
                    "SELECT r.uuid, e.name, r.name, r.params, r.tags, r.comment, "
                    "(SELECT MAX(step) FROM metrics WHERE run_id = r.id) FROM runs r "
                    "JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?"
                ),
                (run_id,),
            )
            b.execute(
                b.sql(
                    "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? "
                    "WHERE id = ?"
                ),
                (now, run_id),
            )
        run_uuid, experiment, name, params, tags, comment, last_step = rows[0]
        reopened = Run(
            self,
            id=run_id,
            uuid=uuid_module.UUID(str(run_uuid)),
            experiment=experiment,
            name=name,
            params=dict(_json.decode(params) or {}),
            tags=list(_json.decode(tags) or []),
            comment=comment,
        )
        reopened._next_step = 0 if last_step is None else int(last_step) + 1
        return reopened

    def delete_run(self, run: Run | int | str | uuid_module.UUID) -> None:
        """Delete a run with its metrics, checkpoints and links (a `Run` must have finished).

        It does not know about runs other processes write to: deleting one of those leaves the
        rows they write afterwards without a run.

        Raises:
            NotFoundError: no such run.
            RunStateError: the run is still running in this process.
        """
        run_id = self._run_id(run)
        for live in active_runs():
            if live.id == run_id and live.tracker._open_url == self._open_url:
                raise RunStateError(
                    f"run {run_id} is still running in this process; finish() it before deleting it"
                )
        b = self.backend
        with self._lock, b.transaction():
            b.execute(b.sql("DELETE FROM runs WHERE id = ?"), (run_id,))

    def _run_id(self, ref: Run | int | str | uuid_module.UUID) -> int:
        """Resolve a run given as a `Run`, an integer id, or a UUID (object or text)."""
        if isinstance(ref, Run):
            if ref.id is None:
                raise DatabaseUnavailableError(
                    f"run {ref.uuid} has not reached its database yet; it has no id so far"
                )
            return ref.id
        b = self.backend
        if isinstance(ref, int) and not isinstance(ref, bool):
            _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE id = ?"), (ref,))
        elif isinstance(ref, (str, uuid_module.UUID)):
            text = str(ref).strip()
            if text.isdigit():
                return self._run_id(int(text))
            try:
                parsed = uuid_module.UUID(text)
            except ValueError:
                raise ConfigurationError(
                    f"run {ref!r} is neither an integer id nor a UUID"
                ) from None
            _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(parsed),))
        else:
            raise ConfigurationError(
                f"run {ref!r} is a {type(ref).__name__}; expected a Run, an int id or a UUID"
            )
        if not rows:
            raise NotFoundError(f"no run {ref!r} in {mask_password(self.url)}")
        return int(rows[0][0])

    def _run_uuid(self, ref: Run | int | str | uuid_module.UUID) -> str:
        """The UUID of a run given as a `Run`, a UUID or an integer id (only this needs the
        database)."""
        if isinstance(ref, Run):
            return str(ref.uuid)
        if isinstance(ref, uuid_module.UUID):
            return str(ref)
        if isinstance(ref, str) and not ref.strip().isdigit():
            try:
                return str(uuid_module.UUID(ref.strip()))
            except ValueError:
                raise ConfigurationError(
                    f"run {ref!r} is neither an integer id nor a UUID"
                ) from None
        run_id = self._run_id(ref)
        _, rows = self.backend.fetchall(
            self.backend.sql("SELECT uuid FROM runs WHERE id = ?"), (run_id,)
        )
        return str(rows[0][0])

    # -- readers ------------------------------------------------------------------------------

    def runs(
        self,
        experiment: str | None = None,
        *,
        metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
        where: str | None = None,
        args: Sequence[Any] = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """One row per run: status (stale heartbeat -> ``crashed``), times, ``params.*``, aggregates.

        Example::

            tracker.runs("bert", metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=10)

        Args:
            experiment: only runs of this experiment.
            metrics: per-run aggregations computed in SQL, e.g. ``{"val/acc": "max"}`` or
                ``["val/acc:max", "val/acc:last"]``; aggregations are ``last``, ``first``,
                ``min``, ``max``, ``mean`` and ``count``. Columns are named ``key:agg``.
            where: an extra SQL condition on the ``runs`` table aliased ``r`` (trusted SQL),
                with ``?`` placeholders bound from `args`.
            order_by: sort in SQL (default: by run id) by a metric spec ``KEY:AGG`` (one of
                `metrics` or not; it does not add a column) or a column: ``id``, ``uuid``,
                ``experiment``, ``name``, ``status``, ``created_at``, ``started_at``,
                ``ended_at``, ``heartbeat_at``, ``owner``, ``comment``. A leading ``-`` sorts
                descending; a list sorts by each in turn. Missing values come last either
                way, NaN above every number (as PostgreSQL orders it), ties by run id.
            limit: at most this many runs (the first ones in that order), cut in SQL.

        Raises:
            ConfigurationError: a malformed spec, an unknown order_by column, a bad limit.
        """
        with self._lock:
            return analysis.runs(
                self,
                experiment,
                metrics=metrics,
                where=where,
                args=args,
                order_by=order_by,
                limit=limit,
            )

    def metrics(
        self, run_ids: int | Run | Iterable[int | Run], keys: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """One row per run and step, one column per metric named by its original key."""
        with self._lock:
            return analysis.metrics(self, run_ids, keys)

    def lineage(self, run: Run | int | str | uuid_module.UUID) -> pd.DataFrame:
        """The ancestors and descendants of a run through ``run_links``, with link kinds."""
        with self._lock:
            return analysis.lineage(self, self._run_id(run))

    def run_info(self, run: Run | int | str | uuid_module.UUID) -> dict[str, Any]:
        """Everything stored about one run: its row, links and per-metric summary."""
        with self._lock:
            return analysis.run_info(self, self._run_id(run))

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run any SQL and return the result as a DataFrame."""
        with self._lock:
            return analysis.query(self, sql, params)

    def close(self) -> None:
        """Close the reader and idle writer connections (running runs keep theirs).

        A tracker used after `close()` connects again when it needs to (without pooling).
        """
        with self._lock, self._pool_lock:
            self._closed = True
            for backend in [self._backend, *self._pool]:
                with contextlib.suppress(SQLTrackError):
                    backend.close()
            self._pool.clear()
            self._backend = _LazyBackend(self._open_url)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        self.registry._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        for backend in [self._backend, *self._pool]:
            backend.abandon()
        self._pool.clear()
        self._backend = _LazyBackend(self._open_url)


class _LazyBackend:
    """Stands in for a connection not opened yet: after a fork, after `close()`, or while the
    database is away. A failed attempt is not repeated for `_RETRY_S` seconds (a black-holed
    connect blocks for its timeout, and `start_run` must not block training each time), unless
    a writer of the tracker reached the database meanwhile (`reachable`)."""

    _RETRY_S = 30.0

    def __init__(self, url: str, *, failure: DatabaseUnavailableError | None = None) -> None:
        self._url = url
        self._real: Backend | None = None
        self._failure = failure
        self._retry_at = time.monotonic() + self._RETRY_S if failure is not None else 0.0

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            if self._failure is not None and time.monotonic() < self._retry_at:
                raise self._failure
            try:
                self._real = open_backend(self._url)
            except DatabaseUnavailableError as exc:
                self._failure, self._retry_at = exc, time.monotonic() + self._RETRY_S
                raise
        return getattr(self._real, name)

    def reachable(self) -> None:
        """The database answered another connection: try again at the next use."""
        self._failure = None

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
            self._real = None

    def abandon(self) -> None:
        """In a forked child: forget a connection the parent opened, never opening one."""
        if self._real is not None:
            self._real.abandon()
            self._real = None


def _after_fork_in_child() -> None:
    """The one fork hook: runs, their writers and spools first, then the trackers."""
    runs._after_fork_in_child()
    for tracker in list(_trackers):
        tracker._after_fork()
    global _default
    _default = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def connect(
    url: str | os.PathLike[str] | None = None,
    *,
    migrate: bool = True,
    offline_ok: bool = True,
    **options: Any,
) -> Tracker:
    """Open the tracking database at `url` and bring its schema up to date.

    `url` defaults to ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db`` in the working
    directory. Options are those of `Options` (``flush_interval``, ``column_budget``, ...).
    A database that cannot be reached now warns and gives a tracker whose runs go to the local
    spool until it answers (readers raise `DatabaseUnavailableError` meanwhile); with
    ``offline_ok=False`` it raises `DatabaseUnavailableError` here instead.
    """
    return Tracker(url, migrate=migrate, offline_ok=offline_ok, **options)


_default: dict[str, Tracker] = {}
_default_lock = threading.Lock()


def default_tracker() -> Tracker:
    """The tracker for ``$SQLTRACK_URL`` (or the default SQLite file), connected once."""
    url = resolve_url(None)
    with _default_lock:
        tracker = _default.get(url)
        if tracker is None:
            tracker = _default[url] = connect(url)
        return tracker


def start_run(
    experiment: str,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
    comment: str | None = None,
) -> Run:
    """`Tracker.start_run` on the default tracker (see `connect`)."""
    return default_tracker().start_run(
        experiment, name=name, params=params, tags=tags, comment=comment
    )


def _check_uuid(value: uuid_module.UUID | str) -> uuid_module.UUID:
    if isinstance(value, uuid_module.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid_module.UUID(value)
        except ValueError:
            pass
    raise ConfigurationError(f"uuid {value!r} is not a UUID such as '{uuid_module.uuid4()}'")
