"""The rows of ``runs``: creating one, and finding a run by `Run`, id or UUID."""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _json
from ._backends.base import mask_password
from .errors import ConfigurationError, DatabaseUnavailableError, NotFoundError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["RunLike", "insert_run", "reopen_run", "run_id", "run_ids", "run_uuid"]


@runtime_checkable
class RunLike(Protocol):
    """A run as the readers take it (a `Run`): its UUID, and its id once it has one."""

    uuid: uuid_module.UUID

    @property
    def id(self) -> int | None: ...


def insert_run(
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


def run_id(backend: Callable[[], Backend], ref: object, url: str) -> int:
    """Resolve a run given as a `Run`, an integer id, or a UUID (object or text) in the
    database at `url` (named in errors); `backend()` is asked for only if needed."""
    if isinstance(ref, RunLike):
        if ref.id is None:
            raise DatabaseUnavailableError(
                f"run {ref.uuid} has not reached its database yet; it has no id so far"
            )
        return ref.id
    b = backend()
    if isinstance(ref, int) and not isinstance(ref, bool):
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE id = ?"), (ref,))
    elif isinstance(ref, (str, uuid_module.UUID)):
        text = str(ref).strip()
        if text.isdigit():
            return run_id(backend, int(text), url)
        try:
            parsed = uuid_module.UUID(text)
        except ValueError:
            raise ConfigurationError(f"run {ref!r} is neither an integer id nor a UUID") from None
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(parsed),))
    else:
        raise ConfigurationError(
            f"run {ref!r} is a {type(ref).__name__}; expected a Run, an int id or a UUID"
        )
    if not rows:
        raise NotFoundError(f"no run {ref!r} in {mask_password(url)}")
    return int(rows[0][0])


def run_uuid(backend: Callable[[], Backend], ref: object, url: str) -> str:
    """The UUID of a run given as a `Run`, a UUID or an integer id (only an id needs the
    database)."""
    if isinstance(ref, RunLike):
        return str(ref.uuid)
    if isinstance(ref, uuid_module.UUID):
        return str(ref)
    if isinstance(ref, str) and not ref.strip().isdigit():
        try:
            return str(uuid_module.UUID(ref.strip()))
        except ValueError:
            raise ConfigurationError(f"run {ref!r} is neither an integer id nor a UUID") from None
    b = backend()
    _, rows = b.fetchall(b.sql("SELECT uuid FROM runs WHERE id = ?"), (run_id(backend, ref, url),))
    return str(rows[0][0])


def run_ids(runs: object) -> list[int]:
    """The run ids `metrics` takes: one or several ints or Runs."""
    single = isinstance(runs, (int, str, RunLike)) or not isinstance(runs, Iterable)
    items: Iterable[Any] = [runs] if single else runs  # type: ignore[assignment]
    ids = []
    for item in items:
        ident = item.id if isinstance(item, RunLike) else item
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise ConfigurationError(
                f"run id {item!r} is a {type(item).__name__}; expected an int or a Run"
            )
        ids.append(ident)
    return ids


def reopen_run(b: Backend, run_id: int) -> tuple[Any, ...]:
    """Make run `run_id` running again; return its (uuid, experiment, name, params, tags,
    comment, last step) as stored."""
    now = b.timestamp(time.time())
    with b.transaction():
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
                "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? WHERE id = ?"
            ),
            (now, run_id),
        )
    return tuple(rows[0])
