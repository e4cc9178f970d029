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
from typing import TYPE_CHECKING, Any

from . import _env, _json, _process, _rows, analysis, migrations
from ._backends import Backend, open_backend
from ._backends.base import check_scheme, mask_password, pin_url, resolve_url
from ._backends.lazy import LazyBackend
from ._checks import check_description, check_uuid
from ._history import HistoryReader
from ._manage import Management
from ._options import Options
from ._store import ColumnRegistry
from ._views import Views
from ._warn import warn
from .errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    RunStateError,
    SQLTrackError,
)
from .export import ExportMixin
from .runs import Run

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Options", "Tracker", "connect"]


_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()
_POOL_SIZE = 4  # idle writer connections kept per tracker


class Tracker(HistoryReader, Management, Views, ExportMixin):
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
            self._backend = LazyBackend(self._open_url, failure=exc)
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
        if isinstance(self._backend, LazyBackend):
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
        checked_tags = check_description(experiment, name, comment, tags)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigurationError(
                f"params {params!r:.80} is a {type(params).__name__}; expected a dict"
            )
        plain_params = _json.jsonable(dict(params or {}))
        run_uuid = uuid_module.uuid4() if uuid is None else check_uuid(uuid)
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
                run_id = _rows.insert_run(self.backend, new=True, **fields)
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
            check_description(experiment, None, None, None)
            return Run(
                self,
                id=None,
                uuid=uuid_module.UUID(self.run_uuid(run)),  # a Run or a UUID: no database
                experiment=experiment,
                name=None,
                params={},
                tags=[],
                comment=None,
                env=_env.capture(),
                reopen=True,
            )

    def _continue_run(self, run: Run | int | str | uuid_module.UUID) -> Run:
        run_id = self.run_id(run)
        with self._lock:
            row = _rows.reopen_run(self.backend, run_id)
        run_uuid, experiment, name, params, tags, comment, last_step = row
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
        run_id = self.run_id(run)
        for live in _process.active_runs():
            if (
                isinstance(live, Run)
                and live.id == run_id
                and live.tracker._open_url == self._open_url
            ):
                raise RunStateError(
                    f"run {run_id} is still running in this process; finish() it before deleting it"
                )
        b = self.backend
        with self._lock, b.transaction():
            b.execute(b.sql("DELETE FROM runs WHERE id = ?"), (run_id,))

    def run_id(self, ref: Run | int | str | uuid_module.UUID) -> int:
        """The integer id of a run given as a `Run`, an integer id, or a UUID (object or text).

        Raises:
            NotFoundError: no such run.
            DatabaseUnavailableError: a `Run` that has not reached its database yet.
        """
        with self._lock:
            return _rows.run_id(lambda: self.backend, ref, self.url)

    def run_uuid(self, ref: Run | int | str | uuid_module.UUID) -> str:
        """The UUID of a run given as a `Run`, a UUID or an integer id (only an id needs the
        database)."""
        with self._lock:
            return _rows.run_uuid(lambda: self.backend, ref, self.url)

    # -- readers ------------------------------------------------------------------------------

    def runs(
        self,
        experiment: str | None = None,
        *,
        metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
        params: str | Sequence[str] | None = None,
        varying: bool | None = None,
        where: str | None = None,
        args: Sequence[Any] = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        view: str | None = None,
    ) -> pd.DataFrame:
        """One row per run: status (stale heartbeat -> ``crashed``), times, ``params.*``, aggregates.

        Example::

            tracker.runs("bert", metrics={"val/acc": "max"}, order_by="-val/acc:max", limit=10)

        Args:
            experiment: only runs of this experiment.
            metrics: per-run aggregations computed in SQL, e.g. ``{"val/acc": "max"}`` or
                ``["val/acc:argmax", "val/acc:p90"]``: last, first, min, max, mean, count,
                argmin, argmax, at=STEP, mean_last=K, pQ, median (grammar, meanings, NaN rule:
                `sqltrack_core._runs_query`'s docstring). Columns are named ``key:agg``.
            params: the ``params.*`` columns, in this order: flattened names without
                ``params.`` or fnmatch globs (``["lr", "optim.*"]``, a glob's matches sorted);
                None: all. A name that no run returned has raises NotFoundError.
            varying: hide the params equal in every run returned (one missing somewhere
                varies); ``df.attrs["equal_params"]`` maps those hidden to their value.
            where: an extra SQL condition on the ``runs`` table aliased ``r`` (trusted SQL),
                with ``?`` placeholders bound from `args`.
            order_by: sort in SQL (default: by run id) by a metric spec ``KEY:AGG`` (one of
                `metrics` or not; it does not add a column) or a column: ``id``, ``uuid``,
                ``experiment``, ``name``, ``status``, ``created_at``, ``started_at``,
                ``ended_at``, ``heartbeat_at``, ``owner``, ``comment``. A leading ``-`` sorts
                descending; a list sorts by each in turn. Missing values come last either
                way, NaN above every number (as PostgreSQL orders it), ties by run id.
            limit: at most this many runs (the first ones in that order), cut in SQL.
            view: a saved view (`save_view`); each argument given (not None) overrides its own.

        Raises:
            ConfigurationError: a malformed spec, an unknown order_by column, a bad limit.
            NotFoundError: an unknown experiment, metric key, param or view.
        """
        return self._read_runs(
            view, experiment, metrics, params, varying, where, args, order_by, limit
        )

    def lineage(self, run: Run | int | str | uuid_module.UUID) -> pd.DataFrame:
        """The ancestors and descendants of a run through ``run_links``, with link kinds."""
        with self._lock:
            return analysis.lineage(self.backend, self.run_id(run))

    def run_info(self, run: Run | int | str | uuid_module.UUID) -> dict[str, Any]:
        """Everything stored about one run: its row, links and per-metric summary."""
        with self._lock:
            return analysis.run_info(
                self.backend, self.run_id(run), stale_after=self.options.stale_after
            )

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run any SQL and return the result as a DataFrame.

        Placeholders are the same on every backend: ``?`` with a sequence of params, or
        ``:name`` with a mapping (``tracker.query("SELECT * FROM runs WHERE id = ?", [3])``).
        Text in literals, quoted identifiers and comments is never a placeholder. On
        PostgreSQL, a query without params has none (``data ? 'key'`` runs as written); with
        params, write jsonb's ``?`` operator as ``??`` (``?|`` and ``?&`` as they are).

        Raises:
            ConfigurationError: params that do not match the placeholders, naming the misfit.
        """
        with self._lock:
            return analysis.query(self.backend, sql, params)

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
            self._backend = LazyBackend(self._open_url)

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
        self._backend = LazyBackend(self._open_url)


def _forget_after_fork() -> None:
    """In a forked child, after its runs forgot their parent's threads (`_process`): the
    trackers' locks and connections, and the default trackers."""
    for tracker in list(_trackers):
        tracker._after_fork()
    global _default
    _default = {}


_process.at_fork_in_child(_forget_after_fork)


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
