"""Managing what a tracking database holds: list, rename, move and delete experiments and runs.

`Management` is mixed into `Tracker`; its SQL is built by the pure functions here, and deletes
rely on the schema's ``ON DELETE CASCADE`` (experiments -> runs -> links, checkpoints ->
fingerprints) and its trigger (runs -> metrics), counting first in the same transaction.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

from . import _process
from ._checks import check_description
from ._suggest import did_you_mean
from ._views import rename_experiment_in_views
from .errors import ConfigurationError, MissingDependencyError, NotFoundError, RunStateError
from .runs import Run

if TYPE_CHECKING:
    import pandas as pd

    from ._backends import Backend
    from ._backends.dialect import Dialect
    from ._host import RunHost

__all__ = ["Deleted", "Management", "experiments_query"]

RunRef = Run | int | str | uuid_module.UUID
_CHUNK = 500  # run ids per statement: well within every driver's limit on parameters

#: a run that counts as running / crashed, as the runs reader decides: by its heartbeat, against
#: the time (``?``) before which a heartbeat is stale
_BEAT = "COALESCE(r.heartbeat_at, r.started_at, r.created_at)"
_LIVE = f"r.status = 'running' AND {_BEAT} >= ?"
_CRASHED = f"r.status = 'running' AND {_BEAT} < ?"
#: status column of the listing -> the condition on ``runs r`` that counts a run in it
_STATUSES = {
    "running": _LIVE,
    "crashed": _CRASHED,
    "completed": "r.status = 'completed'",
    "failed": "r.status = 'failed'",
    "cancelled": "r.status = 'cancelled'",
}
#: the times whose latest is an experiment's last activity
_ACTIVITY = ("started_at", "ended_at", "heartbeat_at")
EXPERIMENT_COLUMNS = (
    "id",
    "name",
    "runs",
    *_STATUSES,
    "created_at",
    "first_started",
    "last_activity",
)


@dataclass(frozen=True)
class Deleted:
    """What a delete removed, or would remove (``dry_run=True``).

    `live_runs` counts the runs among `runs` whose heartbeat was still fresh: running in some
    process, which may go on writing rows that belong to no run.
    """

    experiments: int = 0
    runs: int = 0
    live_runs: int = 0
    metric_rows: int = 0
    links: int = 0
    checkpoints: int = 0
    fingerprints: int = 0

    def __add__(self, other: Deleted) -> Deleted:
        return Deleted(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __str__(self) -> str:
        """``1 experiment, 3 runs (1 still running), 300 metric rows, 2 links, ...``"""
        parts = []
        for label, count in (
            ("experiment", self.experiments),
            ("run", self.runs),
            ("metric row", self.metric_rows),
            ("link", self.links),
            ("checkpoint", self.checkpoints),
            ("tensor fingerprint", self.fingerprints),
        ):
            if count or label == "run":
                parts.append(f"{count} {label}{'' if count == 1 else 's'}")
            if label == "run" and self.live_runs:
                parts[-1] += f" ({self.live_runs} still running)"
        return ", ".join(parts)


def experiments_query(dialect: Dialect, stale: Any) -> tuple[str, list[Any]]:
    """The experiments listing: one row per experiment (those without runs too), in id order,
    with `EXPERIMENT_COLUMNS` but ``last_activity`` as the latest start, end and heartbeat (three
    columns, any of them NULL); times as `dialect.epoch_sql` integers."""
    counts = "".join(
        f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS {name}, "
        for name, condition in _STATUSES.items()
    )
    params = [stale for condition in _STATUSES.values() if "?" in condition]
    sql = (
        f"SELECT e.id, e.name, COUNT(r.id) AS runs, {counts}"
        f"{dialect.epoch_sql('e.created_at')} AS created_at, "
        f"{dialect.epoch_sql('MIN(r.started_at)')} AS first_started, "
        + ", ".join(f"{dialect.epoch_sql(f'MAX(r.{c})')} AS last_{c}" for c in _ACTIVITY)
        + " FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id"
        " GROUP BY e.id, e.name, e.created_at ORDER BY e.id"
    )
    return sql, params


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def count_runs(b: Backend, ids: Sequence[int], stale: Any) -> Deleted:
    """What deleting the runs `ids` takes with it (links counted once, whichever end)."""
    total, links = Deleted(), set()
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        marks = _marks(len(chunk))
        _, rows = b.fetchall(
            b.sql(
                f"SELECT (SELECT COUNT(*) FROM runs r WHERE r.id IN ({marks})), "
                f"(SELECT COUNT(*) FROM runs r WHERE r.id IN ({marks}) AND {_LIVE}), "
                f"(SELECT COUNT(*) FROM metrics WHERE run_id IN ({marks})), "
                f"(SELECT COUNT(*) FROM checkpoints WHERE run_id IN ({marks})), "
                "(SELECT COUNT(*) FROM tensor_fingerprints f JOIN checkpoints c "
                f"ON c.id = f.checkpoint_id WHERE c.run_id IN ({marks}))"
            ),
            [*chunk, *chunk, stale, *chunk, *chunk, *chunk],
        )
        runs, live, steps, checkpoints, fingerprints = (int(n) for n in rows[0])
        total += Deleted(
            runs=runs,
            live_runs=live,
            metric_rows=steps,
            checkpoints=checkpoints,
            fingerprints=fingerprints,
        )
        _, found = b.fetchall(
            b.sql(
                "SELECT from_run_id, kind, to_run_id FROM run_links "
                f"WHERE from_run_id IN ({marks}) OR to_run_id IN ({marks})"
            ),
            [*chunk, *chunk],
        )
        links.update(found)
    return total + Deleted(links=len(links))


def experiment_id(b: Backend, name: object) -> int:
    """The id of the experiment called `name`.

    Raises:
        NotFoundError: no such experiment, with the names it may have meant.
        ConfigurationError: `name` is not a str.
    """
    if not isinstance(name, str):
        raise ConfigurationError(
            f"experiment {name!r} is a {type(name).__name__}; expected its name as a str"
        )
    _, rows = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (name,))
    if rows:
        return int(rows[0][0])
    _, known = b.fetchall(b.sql("SELECT name FROM experiments"))
    raise NotFoundError(did_you_mean(name, (n for (n,) in known), what="experiment"))


def _live_runs(host: RunHost) -> list[Run]:
    """The runs of this process, on `host`'s database, that have not finished."""
    return [
        run
        for run in _process.active_runs()
        if isinstance(run, Run) and run.tracker._open_url == host._open_url
    ]


def _refuse_live(host: RunHost, ids: Iterable[int], experiment: str | None = None) -> None:
    wanted = set(ids)
    for run in _live_runs(host):
        if run.id in wanted or (experiment is not None and run.experiment == experiment):
            raise RunStateError(
                f"run {run.id if run.id is not None else run.uuid} is still running in this "
                "process; finish() it before deleting it"
            )


def _times(values: pd.Series, dialect: Dialect) -> pd.Series:
    """UTC datetimes (microseconds) from `dialect.epoch_sql` integers; missing -> NaT."""
    import numpy as np
    import pandas as pd

    nat = np.iinfo(np.int64).min  # NaT, as an int64
    stamps = values.astype("Int64").to_numpy(dtype=np.int64, na_value=nat)
    moments = stamps.view(dialect.epoch_unit).astype("datetime64[us]")
    times: pd.Series = pd.Series(pd.DatetimeIndex(moments).tz_localize("UTC"), index=values.index)
    return times


def experiments_frame(rows: list[tuple[Any, ...]], dialect: Dialect) -> pd.DataFrame:
    """The DataFrame `Management.experiments` returns, from the rows of `experiments_query`."""
    import pandas as pd

    activity = [f"last_{c}" for c in _ACTIVITY]
    raw = pd.DataFrame.from_records(rows, columns=[*EXPERIMENT_COLUMNS[:-1], *activity])
    counted = ["id", "runs", *_STATUSES]
    df: pd.DataFrame = raw[list(EXPERIMENT_COLUMNS[:-3])].astype(dict.fromkeys(counted, "int64"))
    df["name"] = df["name"].astype(str)
    df["created_at"] = _times(raw["created_at"], dialect)
    df["first_started"] = _times(raw["first_started"], dialect)
    df["last_activity"] = _times(raw[activity].astype("Int64").max(axis=1), dialect)
    return df


def _single(runs: object) -> bool:
    return isinstance(runs, (str, int, uuid_module.UUID, Run)) or not isinstance(runs, Iterable)


def _require_pandas() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "listing experiments needs pandas, which is not installed; "
            "run: pip install 'sqltrack-core[pandas]'"
        ) from exc


class Management:
    """Mixed into `Tracker`: list, rename, move and delete experiments and runs.

    Example::

        tracker.experiments()                        # one row per experiment
        tracker.rename_experiment("mnist", "mnist-v1")
        tracker.delete_experiment("scratch", runs=True)
    """

    def experiments(self: RunHost) -> pd.DataFrame:
        """One row per experiment, in creation order: ``id``, ``name``, ``runs`` and the runs
        by status (``running``, ``crashed`` (running with a stale heartbeat), ``completed``,
        ``failed``, ``cancelled``), ``created_at``, ``first_started`` (the earliest run start)
        and ``last_activity`` (the latest run start, end or heartbeat), times in UTC."""
        _require_pandas()
        with self._lock:
            b = self.backend
            stale = b.timestamp(time.time() - self.options.stale_after)
            sql, params = experiments_query(b.dialect, stale)
            _, rows = b.fetchall(b.sql(sql), params)
        return experiments_frame(rows, b.dialect)

    def rename_experiment(self: RunHost, old: str, new: str) -> None:
        """Rename experiment `old` to `new`; its id and runs stay (renaming to itself is a no-op).

        Runs of this process in it go on under the new name, and saved views that select it
        select it under the new name.

        Raises:
            NotFoundError: no experiment `old`.
            ConfigurationError: `new` is taken, or is not a valid name.
        """
        check_description(new, None, None, None)
        with self._lock:
            b = self.backend
            with b.transaction():
                ident = experiment_id(b, old)
                _, taken = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (new,))
                if taken and int(taken[0][0]) != ident:
                    raise ConfigurationError(
                        f"experiment {new!r} exists already (id {taken[0][0]}); choose another "
                        f"name, or move the runs of {old!r} into it with move_run"
                    )
                b.execute(b.sql("UPDATE experiments SET name = ? WHERE id = ?"), (new, ident))
                rename_experiment_in_views(b, old, new)  # saved views follow the rename
        for run in _live_runs(self):
            if run.experiment == old:
                run.experiment = new

    def delete_experiment(
        self: RunHost, name: str, *, runs: bool = False, dry_run: bool = False
    ) -> Deleted:
        """Delete experiment `name`; with ``runs=True`` also its runs with their metrics,
        params, links, checkpoints and fingerprints. Returns what was deleted (with
        ``dry_run=True``: what would be, deleting nothing).

        Raises:
            NotFoundError: no such experiment.
            ConfigurationError: it still has runs and `runs` is False.
            RunStateError: one of its runs is still running in this process.
        """
        with self._lock:
            b = self.backend
            with b.transaction():
                ident = experiment_id(b, name)
                _, found = b.fetchall(
                    b.sql("SELECT id FROM runs WHERE experiment_id = ? ORDER BY id"), (ident,)
                )
                ids = [int(i) for (i,) in found]
                if ids and not runs:
                    raise ConfigurationError(
                        f"experiment {name!r} still has {len(ids)} run(s); delete them with it "
                        "(runs=True, or --runs on the command line) or move them first"
                    )
                _refuse_live(self, ids, experiment=name)
                stale = b.timestamp(time.time() - self.options.stale_after)
                counts = count_runs(b, ids, stale) + Deleted(experiments=1)
                if not dry_run:
                    # ON DELETE CASCADE takes the runs, their links and checkpoints, and the
                    # runs' trigger their metrics; NOT EXISTS keeps a run started meanwhile
                    b.execute(
                        b.sql(
                            "DELETE FROM experiments WHERE id = ? AND (? OR NOT EXISTS "
                            "(SELECT 1 FROM runs WHERE experiment_id = ?))"
                        ),
                        (ident, runs, ident),
                    )
        return counts

    def delete_runs(
        self: RunHost, runs: RunRef | Iterable[RunRef], *, dry_run: bool = False
    ) -> Deleted:
        """Delete runs (each a `Run`, an id or a UUID) with their metrics, links, checkpoints and
        fingerprints, in one transaction; their experiments stay. Returns what was deleted
        (with ``dry_run=True``: what would be, deleting nothing).

        Every run is resolved first: an unknown one deletes nothing.

        Raises:
            NotFoundError: an unknown run (naming what it may have meant).
            RunStateError: a run still running in this process.
        """
        refs = [runs] if _single(runs) else list(cast(Iterable[Any], runs))
        with self._lock:
            ids = list(dict.fromkeys(self.run_id(ref) for ref in refs))
            _refuse_live(self, ids)
            b = self.backend
            with b.transaction():
                counts = count_runs(b, ids, b.timestamp(time.time() - self.options.stale_after))
                for start in range(0, len(ids) if not dry_run else 0, _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    b.execute(b.sql(f"DELETE FROM runs WHERE id IN ({_marks(len(chunk))})"), chunk)
        return counts

    def rename_run(self: RunHost, run: RunRef, name: str | None) -> None:
        """Set the name of a run (a `Run`, an id or a UUID); None clears it. A run still running
        in this process is renamed through it (``run.name = name``), in order with its writes.

        Raises:
            NotFoundError: an unknown run.
            ConfigurationError: `name` is not a str (or None).
        """
        if isinstance(run, Run) and run.tracker._open_url == self._open_url:
            run.name = name
            return
        check_description("-", name, None, None)  # the name as start_run checks it
        with self._lock:
            ident = self.run_id(run)
            for live in _live_runs(self):
                if live.id == ident:
                    live.name = name
                    return
            b = self.backend
            b.execute(b.sql("UPDATE runs SET name = ? WHERE id = ?"), (name, ident))

    def move_run(self: RunHost, run: RunRef, experiment: str) -> None:
        """Move a run (a `Run`, an id or a UUID) into `experiment`, created if new.

        Raises:
            NotFoundError: an unknown run.
            ConfigurationError: `experiment` is not a valid name.
        """
        check_description(experiment, None, None, None)
        with self._lock:
            ident = self.run_id(run)
            b = self.backend
            with b.transaction():
                b.execute(
                    b.sql(
                        "INSERT INTO experiments (name) VALUES (?) ON CONFLICT (name) DO NOTHING"
                    ),
                    (experiment,),
                )
                b.execute(
                    b.sql(
                        "UPDATE runs SET experiment_id = "
                        "(SELECT id FROM experiments WHERE name = ?) WHERE id = ?"
                    ),
                    (experiment, ident),
                )
        for live in _live_runs(self):
            if live.id == ident:
                live.experiment = experiment
