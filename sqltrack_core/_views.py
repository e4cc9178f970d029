"""Saved views: named selections of runs in the ``views`` table, shared by everyone who reads
the database (the CLI, reports, the dashboard), never kept in a URL.

`Views` is mixed into `Tracker`. A view's definition is JSON (`FIELDS`), checked when it is
saved by running it once, so a view that saves is a view that runs.
"""

from __future__ import annotations

import getpass
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import _json, analysis
from ._runs_query import check_limit, parse_metric_specs, parse_order
from ._selection import check_patterns
from ._suggest import did_you_mean
from ._view_sql import render_view_sql
from .errors import ConfigurationError, MissingDependencyError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from ._backends import Backend
    from ._host import RunHost

__all__ = ["FIELDS", "Views", "make_definition", "merge"]

#: what a definition holds, in the order `Tracker.view` lists it
FIELDS = ("experiment", "params", "varying", "metrics", "where", "args", "order_by", "limit")
_DEFAULTS: dict[str, Any] = {"varying": False, "metrics": [], "args": [], "order_by": []}


class Views:
    """Mixed into `Tracker`: save, list, read and delete named selections of runs.

    Example::

        tracker.save_view("best", experiment="mnist", params=["lr", "optim.*"],
                          metrics=["val/acc:max"], order_by="-val/acc:max", limit=10)
        tracker.runs(view="best")                    # the same frame, for everyone
    """

    def save_view(
        self: RunHost,
        name: str,
        *,
        experiment: str | None = None,
        params: str | Sequence[str] | None = None,
        varying: bool = False,
        metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None = None,
        where: str | None = None,
        args: Sequence[Any] = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Save what `runs` takes under `name`, in the database; return it as `view` does.

        The arguments are those of `Tracker.runs` (`args` must be JSON values: str, int,
        float, bool or None). The view is run once before it is saved, so everything `runs`
        would refuse (a malformed spec, an unknown experiment, metric key or param, bad SQL in
        `where`) is refused here. The first to save a name owns it; `replace` overwrites its
        definition (keeping owner and creation time).

        Raises:
            ConfigurationError: a bad argument, or `name` taken and `replace` not given.
            NotFoundError: an unknown experiment, metric key or param.
        """
        check_view_name(name)
        definition = make_definition(
            experiment=experiment,
            params=params,
            varying=varying,
            metrics=metrics,
            where=where,
            args=args,
            order_by=order_by,
            limit=limit,
        )
        with self._lock:
            b = self.backend
            analysis.runs(b, stale_after=self.options.stale_after, **merge(definition, {}))
            _store(b, name, definition, replace=replace)
            return _load(b, name)

    def views(self: RunHost) -> pd.DataFrame:
        """One row per saved view, by name: ``name``, the definition's fields (``experiment``,
        ``params``, ``varying``, ``metrics``, ``where``, ``args``, ``order_by``, ``limit``),
        ``owner``, ``created_at`` and ``updated_at`` (UTC)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError(
                "listing views needs pandas, which is not installed; "
                "run: pip install 'sqltrack-core[pandas]'"
            ) from exc
        with self._lock:
            views = _load_all(self.backend)
        columns = ["name", *FIELDS, "owner", "created_at", "updated_at"]
        df: pd.DataFrame = pd.DataFrame.from_records(views, columns=columns)
        for label in ("created_at", "updated_at"):
            df[label] = pd.to_datetime(df[label], utc=True)
        return df

    def view(self: RunHost, name: str) -> dict[str, Any]:
        """The saved view `name`: ``name``, its definition (see `views`), ``owner``,
        ``created_at`` and ``updated_at`` (UTC datetimes).

        Raises:
            NotFoundError: no view of that name (naming the close ones).
        """
        with self._lock:
            return _load(self.backend, name)

    def delete_view(self: RunHost, name: str) -> None:
        """Delete the saved view `name` (for everyone who reads this database).

        Raises:
            NotFoundError: no view of that name.
        """
        b = self.backend
        with self._lock, b.transaction():
            _, found = b.fetchall(b.sql("SELECT 1 FROM views WHERE name = ?"), (name,))
            if not found:
                raise NotFoundError(_unknown(b, name))
            b.execute(b.sql("DELETE FROM views WHERE name = ?"), (name,))

    def view_sql(self: RunHost, name: str) -> str:
        """A self-contained SELECT giving view `name`'s rows, for psql, DBeaver, Grafana and
        other plain SQL tools: values inlined, one column per param shown and per aggregate,
        the crashed status computed against the database's clock when it runs.

        It is made for this database as it is now: the metric columns it reads, and the param
        columns (globs and ``varying`` resolved against the runs of now). Make it again after
        new params or metrics appear. Params whose keys SQLite would read as a JSON path
        (dots, quotes, a leading digit...) are left out and named in a comment.

        Raises:
            NotFoundError: no view of that name.
        """
        with self._lock:
            b = self.backend
            view = _load(b, name)
            stale_after = self.options.stale_after
            read = analysis.read_runs(b, stale_after=stale_after, **merge(view, {}))
        return render_view_sql(b.dialect, view, read, stale_after=stale_after)

    def _read_runs(
        self: RunHost,
        view: str | None,
        experiment: str | None,
        metrics: Any,
        params: str | Sequence[str] | None,
        varying: bool | None,
        where: str | None,
        args: Sequence[Any],
        order_by: str | Sequence[str] | None,
        limit: int | None,
    ) -> pd.DataFrame:
        """`Tracker.runs`: the arguments given over those of `view`, if one is named."""
        given = {
            "experiment": experiment,
            "params": params,
            "varying": varying,
            "metrics": metrics,
            "where": where,
            "args": args,
            "order_by": order_by,
            "limit": limit,
        }
        with self._lock:
            b = self.backend
            if view is None:
                return analysis.runs(b, stale_after=self.options.stale_after, **merge({}, given))
            chosen = merge(_load(b, view), given)
            # a view's `where` is SQL its author wrote and its reader runs: read-only
            with b.read_only():
                return analysis.runs(b, stale_after=self.options.stale_after, **chosen)


def check_view_name(name: object) -> None:
    """Raise ConfigurationError unless `name` is a non-empty one-line str without outer spaces."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"view name {name!r} must be a non-empty str")
    _json.check_text(name, "view name", ConfigurationError)
    if not name.isprintable() or name != name.strip() or len(name) > 200:
        raise ConfigurationError(
            f"view name {name!r:.80} must be printable text on one line, without leading or "
            "trailing spaces, at most 200 characters"
        )


def make_definition(
    *,
    experiment: str | None,
    params: str | Sequence[str] | None,
    varying: bool,
    metrics: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str] | None,
    where: str | None,
    args: Sequence[Any],
    order_by: str | Sequence[str] | None,
    limit: int | None,
) -> dict[str, Any]:
    """A definition as stored (plain JSON), its parts checked as `runs` checks them."""
    if experiment is not None and (not isinstance(experiment, str) or not experiment):
        raise ConfigurationError(f"experiment {experiment!r} must be a non-empty str or None")
    if not isinstance(varying, bool):
        raise ConfigurationError(f"varying {varying!r} must be True or False")
    orders = [order_by] if isinstance(order_by, str) else list(order_by or [])
    parse_order(orders)
    check_limit(limit)
    if where is not None and not isinstance(where, str):
        raise ConfigurationError(f"where {where!r:.80} must be SQL text or None")
    return {
        "experiment": experiment,
        "params": check_patterns(params),
        "varying": varying,
        "metrics": [f"{key}:{agg}" for key, agg in parse_metric_specs(metrics)],
        "where": where,
        "args": _json_args(args),
        "order_by": orders,
        "limit": limit,
    }


def _json_args(args: Sequence[Any]) -> list[Any]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise ConfigurationError(
            f"args {args!r:.80} has type {type(args).__name__}; expected a list of values"
        )
    for position, value in enumerate(args, start=1):
        plain = value is None or isinstance(value, (bool, int, str))
        if not plain and not (isinstance(value, float) and math.isfinite(value)):
            raise ConfigurationError(
                f"args item {position} ({value!r:.80}, a {type(value).__name__}) cannot be saved "
                "in a view, which stores its args as JSON: use a str, int, finite float, bool "
                "or None (a time as ISO text)"
            )
    return list(args)


def merge(definition: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `analysis.runs`: each one `given` (not None) over the view's.

    `where` and its `args` go together: a `where` given brings its own args; without one, the
    args given (if any) bind the view's `where`.
    """
    chosen = {key: definition.get(key, _DEFAULTS.get(key)) for key in FIELDS}
    for key in ("experiment", "params", "varying", "metrics", "order_by", "limit"):
        if given.get(key) is not None:
            chosen[key] = given[key]
    if given.get("where") is not None:
        chosen["where"], chosen["args"] = given["where"], given.get("args", ())
    elif given.get("args"):
        chosen["args"] = given["args"]
    if chosen["varying"] is None:
        chosen["varying"] = False
    return chosen


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name (containers without $USER)
        return None


def _store(b: Backend, name: str, definition: dict[str, Any], *, replace: bool) -> None:
    """Insert the view, or with `replace` overwrite its definition (owner and creation time
    stay). One INSERT ... ON CONFLICT, so that two processes saving one name at once do not
    collide on the unique name; without `replace`, whoever saved first keeps the name."""
    text = _json.dumps(definition)
    now = b.timestamp(time.time())
    owner, owner_params = b.dialect.owner_sql(_os_user())
    on_conflict = (
        "DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at"
        if replace
        else "DO NOTHING"
    )
    with b.transaction():
        _, found = b.fetchall(b.sql("SELECT owner FROM views WHERE name = ?"), (name,))
        if not found or replace:
            b.execute(
                b.sql(
                    "INSERT INTO views (name, definition, created_at, updated_at, owner) "
                    "VALUES (?, ?, ?, ?, " + owner + ") ON CONFLICT (name) " + on_conflict
                ),
                (name, b.json_param(text), now, now, *owner_params),
            )
            if replace:
                return
            _, found = b.fetchall(  # another process's save between our look and our insert
                b.sql("SELECT owner FROM views WHERE name = ? AND updated_at <> ?"), (name, now)
            )
        if found:
            raise ConfigurationError(
                f"view {name!r} exists (owner {found[0][0]!r}); pass replace=True "
                "(sqltrack views save --replace) to overwrite it"
            )


def rename_experiment_in_views(b: Backend, old: str, new: str) -> int:
    """Point the views that select experiment `old` at `new` (in the caller's transaction, the
    one that renames it); return how many changed. Views name their experiment, so that a view
    reads the same in every database it is copied to."""
    _, rows = b.fetchall(b.sql("SELECT name, definition FROM views"))
    changed = 0
    for name, raw in rows:
        definition = b.dialect.decode_json(raw)
        if isinstance(definition, dict) and definition.get("experiment") == old:
            definition["experiment"] = new
            b.execute(
                b.sql("UPDATE views SET definition = ? WHERE name = ?"),
                (b.json_param(_json.dumps(definition)), name),
            )
            changed += 1
    return changed


_SELECT = "SELECT name, definition, owner, created_at, updated_at FROM views"


def _row(b: Backend, row: Sequence[Any]) -> dict[str, Any]:
    name, definition, owner, created, updated = row
    stored = b.dialect.decode_json(definition) or {}
    view: dict[str, Any] = {"name": name}
    view.update({key: stored.get(key, _DEFAULTS.get(key)) for key in FIELDS})
    view["owner"] = owner
    view["created_at"] = datetime.fromtimestamp(b.unix_time(created), timezone.utc)
    view["updated_at"] = datetime.fromtimestamp(b.unix_time(updated), timezone.utc)
    return view


def _load(b: Backend, name: str) -> dict[str, Any]:
    if not isinstance(name, str):
        raise ConfigurationError(
            f"view name {name!r} has type {type(name).__name__}; expected a str"
        )
    _, rows = b.fetchall(b.sql(_SELECT + " WHERE name = ?"), (name,))
    if not rows:
        raise NotFoundError(_unknown(b, name))
    return _row(b, rows[0])


def _load_all(b: Backend) -> list[dict[str, Any]]:
    _, rows = b.fetchall(b.sql(_SELECT + " ORDER BY name"))
    return [_row(b, row) for row in rows]


def _unknown(b: Backend, name: str) -> str:
    _, rows = b.fetchall(b.sql("SELECT name FROM views"))
    return did_you_mean(name, [row[0] for row in rows], what="view")
